package httpapi

import (
	"context"
	"net/http"
	"time"
)

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz checks storage and the KMS; it answers 503 naming which failed.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	if err := s.svc.Ready(ctx); err != nil {
		status, code := statusOf(err)
		if status != http.StatusServiceUnavailable {
			code = "not_ready"
		}
		s.log.Warn("not ready", "err", err)
		writeError(w, http.StatusServiceUnavailable, code, "not ready: "+code)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}
