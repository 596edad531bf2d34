package httpapi

import (
	"net/http"

	"github.com/agentvault/agentvault/vault"
)

// redact replaces sensitive values in a text with vault tokens (or masks).
func (s *Server) redact(w http.ResponseWriter, r *http.Request) {
	var req vault.RedactRequest
	if !s.decode(w, r, &req) {
		return
	}
	res, err := s.svc.Redact(r.Context(), meta(r), req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// restore puts back the values of a text's tokens the agent may reveal.
func (s *Server) restore(w http.ResponseWriter, r *http.Request) {
	var req vault.TextRestoreRequest
	if !s.decode(w, r, &req) {
		return
	}
	res, err := s.svc.RestoreText(r.Context(), meta(r), req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}
