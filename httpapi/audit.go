package httpapi

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/agentvault/agentvault/vault"
	"github.com/agentvault/agentvault/vault/auditlog"
)

func (s *Server) listAudit(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var f vault.AuditFilter
	var err error
	if v := q.Get("after"); v != "" {
		if f.After, err = strconv.ParseUint(v, 10, 64); err != nil {
			writeError(w, http.StatusBadRequest, "invalid_after", "after must be a sequence number")
			return
		}
	}
	if v := q.Get("before"); v != "" {
		if f.Before, err = strconv.ParseUint(v, 10, 64); err != nil {
			writeError(w, http.StatusBadRequest, "invalid_before", "before must be a sequence number")
			return
		}
	}
	switch q.Get("order") {
	case "", "asc":
	case "desc":
		f.Newest = true
	default:
		writeError(w, http.StatusBadRequest, "invalid_order", "order must be asc or desc")
		return
	}
	var ok bool
	if f.Limit, ok = queryLimit(w, q); !ok {
		return
	}
	for name, dst := range map[string]*time.Time{"since": &f.Since, "until": &f.Until} {
		if v := q.Get(name); v != "" {
			if *dst, err = time.Parse(time.RFC3339, v); err != nil {
				writeError(w, http.StatusBadRequest, "invalid_"+name, name+" must be an RFC 3339 time")
				return
			}
		}
	}
	f.Actor, f.Action, f.RecordID = q.Get("actor"), q.Get("action"), q.Get("record_id")
	entries, next, err := s.svc.ListAudit(r.Context(), f)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	body := map[string]any{"entries": entries, "next": nil}
	if next != 0 {
		body["next"] = next
	}
	writeJSON(w, http.StatusOK, body)
}

// verifyAudit recomputes the chain; each checkpoint= parameter (a signed
// checkpoint saved earlier, as JSON) holds the log to a head the auditor
// saw before.
func (s *Server) verifyAudit(w http.ResponseWriter, r *http.Request) {
	var witnesses []auditlog.Checkpoint
	for _, v := range r.URL.Query()["checkpoint"] {
		cps, err := auditlog.ParseCheckpoints(strings.NewReader(v))
		if err != nil || len(cps) != 1 {
			writeError(w, http.StatusBadRequest, "invalid_checkpoint", "checkpoint must be one signed checkpoint as JSON: {seq, hash, time, signature}")
			return
		}
		witnesses = append(witnesses, cps[0])
	}
	if len(witnesses) > 100 {
		writeError(w, http.StatusBadRequest, "invalid_checkpoint", "at most 100 checkpoints per request")
		return
	}
	res, err := s.svc.VerifyAudit(r.Context(), witnesses...)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// auditCheckpoint signs the chain's head now (unless the last checkpoint
// covers it) and returns the checkpoint, for an auditor to keep outside
// the server and verify against later.
func (s *Server) auditCheckpoint(w http.ResponseWriter, r *http.Request) {
	cp, err := s.svc.Checkpoint(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if cp == nil {
		writeError(w, http.StatusNotFound, "empty_log", "the audit log is empty: nothing to sign yet")
		return
	}
	writeJSON(w, http.StatusOK, cp)
}

// auditPublicKey serves the checkpoint public key (Tink JSON keyset).
func (s *Server) auditPublicKey(w http.ResponseWriter, r *http.Request) {
	pub, err := s.svc.AuditPublicKey(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.Write(pub)
}
