package httpapi

import (
	"net/http"
	"strconv"
)

// backup streams an online backup of the whole database. The audit entry
// is durable before the first byte; a failure after the first byte aborts
// the connection, so the client sees a broken transfer (and the file's
// gzip trailer is missing), never a short file that looks whole.
func (s *Server) backup(w http.ResponseWriter, r *http.Request) {
	b, err := s.svc.BeginBackup(r.Context(), meta(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	name := "agentvault-" + b.Header.CreatedAt.UTC().Format("20060102T150405Z") + ".avbackup"
	h := w.Header()
	h.Set("Content-Type", "application/vnd.agentvault.backup")
	h.Set("Content-Disposition", `attachment; filename="`+name+`"`)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Agentvault-Audit-Seq", strconv.FormatUint(b.Header.AuditSeq, 10))
	w.WriteHeader(http.StatusOK)
	n, err := b.WriteTo(w)
	if err != nil {
		s.log.Error("backup failed while streaming", "request_id", requestID(r), "bytes", n, "err", err)
		panic(http.ErrAbortHandler)
	}
	s.backupDone.SetToCurrentTime()
	s.log.Info("backup streamed", "request_id", requestID(r), "bytes", n, "audit_seq", b.Header.AuditSeq)
}
