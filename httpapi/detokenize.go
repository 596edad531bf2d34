package httpapi

import (
	"net/http"

	"github.com/agentvault/agentvault/vault"
)

func (s *Server) detokenize(w http.ResponseWriter, r *http.Request) {
	var req vault.DetokenizeRequest
	if !s.decode(w, r, &req) {
		return
	}
	res, err := s.svc.Detokenize(r.Context(), meta(r), req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Results []vault.DetokenizeResult `json:"results"`
	}{res})
}
