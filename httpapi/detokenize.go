package httpapi

import (
	"bytes"
	"net/http"

	"github.com/agentvault/agentvault/vault"
)

func (s *Server) detokenize(w http.ResponseWriter, r *http.Request) {
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	req, fast := parseDetokenizeBody(body)
	if !fast {
		req = vault.DetokenizeRequest{}
		if !s.decodeFrom(w, bytes.NewReader(body), &req) {
			return
		}
	}
	res, err := s.svc.Detokenize(r.Context(), meta(r), req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeAnswer(w, http.StatusOK, func(b []byte) []byte { return appendDetokenizeAnswer(b, res) })
}
