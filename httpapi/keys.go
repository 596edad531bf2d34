package httpapi

import (
	"net/http"

	"github.com/gorilla/mux"

	"github.com/agentvault/agentvault/vault"
)

func (s *Server) keyStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.svc.KeyStatus(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) rotateKey(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Target     string `json:"target"`
		Collection string `json:"collection"`
	}
	if !s.decode(w, r, &req) {
		return
	}
	var (
		res *vault.RotateResult
		err error
	)
	switch req.Target {
	case "kek":
		if req.Collection != "" {
			writeError(w, http.StatusBadRequest, "invalid_collection", "the KEK is not per collection; leave collection out")
			return
		}
		res, err = s.svc.RotateKEK(r.Context(), meta(r))
	case "dek":
		if req.Collection == "" {
			writeError(w, http.StatusBadRequest, "invalid_collection", "rotating a DEK needs collection")
			return
		}
		res, err = s.svc.RotateDEK(r.Context(), meta(r), req.Collection)
	default:
		writeError(w, http.StatusBadRequest, "invalid_target", `target must be "kek" or "dek"`)
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) reencrypt(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Collection string `json:"collection"`
	}
	if !s.decode(w, r, &req) {
		return
	}
	if req.Collection == "" {
		writeError(w, http.StatusBadRequest, "invalid_collection", "collection is required")
		return
	}
	j, err := s.svc.StartReencrypt(r.Context(), meta(r), req.Collection)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/jobs/"+j.ID)
	writeJSON(w, http.StatusAccepted, j)
}

func (s *Server) retireKey(destroy bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Collection string  `json:"collection"`
			KeyID      *uint32 `json:"key_id"`
		}
		if !s.decode(w, r, &req) {
			return
		}
		if req.Collection == "" || req.KeyID == nil {
			writeError(w, http.StatusBadRequest, "invalid_request", "collection and key_id are required")
			return
		}
		var err error
		if destroy {
			err = s.svc.DestroyKey(r.Context(), meta(r), req.Collection, *req.KeyID)
		} else {
			err = s.svc.DisableKey(r.Context(), meta(r), req.Collection, *req.KeyID)
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
		state := "disabled"
		if destroy {
			state = "destroyed"
		}
		writeJSON(w, http.StatusOK, map[string]any{"collection": req.Collection, "key_id": *req.KeyID, "state": state})
	}
}

func (s *Server) getJob(w http.ResponseWriter, r *http.Request) {
	j, err := s.svc.GetJob(r.Context(), mux.Vars(r)["id"])
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, j)
}

func (s *Server) listJobs(w http.ResponseWriter, r *http.Request) {
	js, err := s.svc.ListJobs(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"jobs": js})
}
