package httpapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"

	"github.com/gorilla/mux"

	"github.com/agentvault/agentvault/vault"
)

type recordInput struct {
	Fields map[string]json.RawMessage `json:"fields"`
}

func (s *Server) createRecords(w http.ResponseWriter, r *http.Request) {
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	in, fast := parseCreateBody(body)
	if !fast {
		var req struct {
			Records []recordInput `json:"records"`
		}
		if !s.decodeFrom(w, bytes.NewReader(body), &req) {
			return
		}
		in = make([]vault.NewRecord, len(req.Records))
		for i, rec := range req.Records {
			in[i] = vault.NewRecordOf(rec.Fields)
		}
	}
	recs, err := s.svc.CreateRecordsInOrder(r.Context(), meta(r), mux.Vars(r)["collection"], in)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeAnswer(w, http.StatusCreated, func(b []byte) []byte { return appendCreatedAnswer(b, recs) })
}

func (s *Server) getRecord(w http.ResponseWriter, r *http.Request) {
	v := mux.Vars(r)
	rec, err := s.svc.GetRecord(r.Context(), meta(r), v["collection"], v["id"], r.URL.Query().Get("purpose"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, rec)
}

// listRecords pages through a collection: ?limit=&after=&purpose=.
func (s *Server) listRecords(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, ok := queryLimit(w, q)
	if !ok {
		return
	}
	recs, next, err := s.svc.ListRecords(r.Context(), meta(r), mux.Vars(r)["collection"], q.Get("purpose"), limit, q.Get("after"))
	s.writeRecordPage(w, r, recs, next, err)
}

// queryLimit reads ?limit=, 0 when it is absent; a limit that is not a
// positive number is answered invalid_limit and ok is false.
func queryLimit(w http.ResponseWriter, q url.Values) (limit int, ok bool) {
	v := q.Get("limit")
	if v == "" {
		return 0, true
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		writeError(w, http.StatusBadRequest, "invalid_limit", "limit must be a positive number")
		return 0, false
	}
	return n, true
}

// writeRecordPage answers a page of records: {records, next} with next
// left out on the last page.
func (s *Server) writeRecordPage(w http.ResponseWriter, r *http.Request, recs []vault.Record, next string, err error) {
	if err != nil {
		s.fail(w, r, err)
		return
	}
	body := map[string]any{"records": recs}
	if next != "" {
		body["next"] = next
	}
	writeJSON(w, http.StatusOK, body)
}

// searchRecords finds records by equality conditions.
func (s *Server) searchRecords(w http.ResponseWriter, r *http.Request) {
	var req vault.SearchRequest
	if !s.decode(w, r, &req) {
		return
	}
	recs, next, err := s.svc.SearchRecords(r.Context(), meta(r), mux.Vars(r)["collection"], req)
	s.writeRecordPage(w, r, recs, next, err)
}

// updateRecord changes fields of a record: {fields: {name: value|null}}.
func (s *Server) updateRecord(w http.ResponseWriter, r *http.Request) {
	var req recordInput
	if !s.decode(w, r, &req) {
		return
	}
	v := mux.Vars(r)
	rec, err := s.svc.UpdateRecord(r.Context(), meta(r), v["collection"], v["id"], req.Fields)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, rec)
}

func (s *Server) deleteRecord(w http.ResponseWriter, r *http.Request) {
	v := mux.Vars(r)
	if err := s.svc.DeleteRecord(r.Context(), meta(r), v["collection"], v["id"]); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
