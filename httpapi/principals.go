package httpapi

import (
	"net/http"
	"time"

	"github.com/gorilla/mux"

	"github.com/agentvault/agentvault/vault"
)

type principalView struct {
	ID        string       `json:"id"`
	Name      string       `json:"name"`
	Roles     []vault.Role `json:"roles"`
	CreatedAt time.Time    `json:"created_at"`
	RevokedAt *time.Time   `json:"revoked_at,omitempty"`
	// Token is set only in the answer to the create call.
	Token string `json:"token,omitempty"`
}

func viewPrincipal(p *vault.Principal) principalView {
	return principalView{ID: p.ID, Name: p.Name, Roles: p.Roles, CreatedAt: p.CreatedAt, RevokedAt: p.RevokedAt}
}

func (s *Server) createPrincipal(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name  string       `json:"name"`
		Roles []vault.Role `json:"roles"`
	}
	if !s.decode(w, r, &req) {
		return
	}
	p, token, err := s.svc.CreatePrincipal(r.Context(), meta(r), req.Name, req.Roles)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	v := viewPrincipal(p)
	v.Token = token
	writeJSON(w, http.StatusCreated, v)
}

func (s *Server) listPrincipals(w http.ResponseWriter, r *http.Request) {
	ps := s.svc.ListPrincipals(r.Context())
	out := make([]principalView, len(ps))
	for i, p := range ps {
		out[i] = viewPrincipal(p)
	}
	writeJSON(w, http.StatusOK, map[string]any{"principals": out})
}

func (s *Server) revokePrincipal(w http.ResponseWriter, r *http.Request) {
	if err := s.svc.RevokePrincipal(r.Context(), meta(r), mux.Vars(r)["id"]); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// me answers who the token belongs to, for clients (the console) that
// adapt to the caller's roles.
func (s *Server) me(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, viewPrincipal(principal(r)))
}
