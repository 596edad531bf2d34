package httpapi

import (
	"net/http"

	"github.com/gorilla/mux"
)

func (s *Server) listApprovals(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, ok := queryLimit(w, q) // 0: all
	if !ok {
		return
	}
	as, err := s.svc.ListApprovals(r.Context(), principal(r), q.Get("status"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if limit > 0 && len(as) > limit {
		as = as[:limit] // newest first: the most recent ones
	}
	writeJSON(w, http.StatusOK, map[string]any{"approvals": as})
}

func (s *Server) getApproval(w http.ResponseWriter, r *http.Request) {
	a, err := s.svc.GetApproval(r.Context(), principal(r), mux.Vars(r)["id"])
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, a)
}

func (s *Server) decideApproval(approve bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Reason string `json:"reason"`
		}
		if !s.decode(w, r, &req) {
			return
		}
		a, err := s.svc.DecideApproval(r.Context(), meta(r), mux.Vars(r)["id"], approve, req.Reason)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, a)
	}
}
