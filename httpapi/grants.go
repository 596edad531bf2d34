package httpapi

import (
	"net/http"

	"github.com/gorilla/mux"

	"github.com/agentvault/agentvault/vault"
)

func (s *Server) createGrant(w http.ResponseWriter, r *http.Request) {
	var req vault.GrantRequest
	if !s.decode(w, r, &req) {
		return
	}
	g, err := s.svc.CreateGrant(r.Context(), meta(r), req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, g)
}

func (s *Server) listGrants(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	gs, err := s.svc.ListGrants(r.Context(), vault.GrantFilter{
		PrincipalID: q.Get("principal_id"), Collection: q.Get("collection"), State: q.Get("state"),
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"grants": gs})
}

func (s *Server) revokeGrant(w http.ResponseWriter, r *http.Request) {
	if err := s.svc.RevokeGrant(r.Context(), meta(r), mux.Vars(r)["id"]); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
