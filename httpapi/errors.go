package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/agentvault/agentvault/keys"
	"github.com/agentvault/agentvault/vault"
)

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// writeError answers with the contract's error shape.
func writeError(w http.ResponseWriter, status int, code, message string) {
	writeJSON(w, status, errorBody{Error: errorDetail{Code: code, Message: message}})
}

// statusOf maps domain errors to statuses, in one place.
func statusOf(err error) (int, string) {
	switch {
	case errors.Is(err, vault.ErrInvalid):
		return http.StatusBadRequest, "invalid_request"
	case errors.Is(err, vault.ErrUnauthenticated):
		return http.StatusUnauthorized, "unauthenticated"
	case errors.Is(err, vault.ErrForbidden):
		return http.StatusForbidden, "forbidden"
	case errors.Is(err, vault.ErrNotFound):
		return http.StatusNotFound, "not_found"
	case errors.Is(err, vault.ErrConflict):
		return http.StatusConflict, "conflict"
	case errors.Is(err, vault.ErrTooLarge), errors.Is(err, vault.ErrTxnTooBig):
		return http.StatusRequestEntityTooLarge, "too_large"
	case errors.Is(err, keys.ErrKMSUnavailable):
		return http.StatusServiceUnavailable, "kms_unavailable"
	case errors.Is(err, vault.ErrStorageFull):
		return http.StatusServiceUnavailable, "storage_full"
	case errors.Is(err, vault.ErrUnavailable):
		return http.StatusServiceUnavailable, "storage_unavailable"
	}
	return http.StatusInternalServerError, "internal"
}

// fail answers with err mapped to its status. Domain errors carry their
// own code and a message meant for people; anything else is logged with
// the request id and answered with a generic message.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, code := statusOf(err)
	var de *vault.Error
	switch {
	case errors.As(err, &de):
		writeError(w, status, de.Code, de.Message)
	case code == "storage_full":
		s.log.Warn("write refused: storage full", "request_id", requestID(r), "err", err)
		writeError(w, status, code, "the server's disk is down to its reserve: writes are refused until space is freed (reads go on); retry later")
	case status == http.StatusInternalServerError:
		s.log.Error("request failed", "request_id", requestID(r), "err", err)
		writeError(w, status, code, "internal error; the server log has details under request id "+requestID(r))
	case status == http.StatusServiceUnavailable:
		s.log.Warn("dependency unavailable", "request_id", requestID(r), "err", err)
		writeError(w, status, code, "a dependency is unavailable; retry later (request id "+requestID(r)+")")
	default:
		writeError(w, status, code, err.Error())
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	buf := jsonBufs.Get().(*bytes.Buffer)
	defer putJSONBuf(buf)
	buf.Reset()
	if err := json.NewEncoder(buf).Encode(v); err != nil {
		// Only a programming error (an unencodable type) gets here.
		writeError(w, http.StatusInternalServerError, "internal", "internal error")
		return
	}
	writeBody(w, status, buf.Bytes())
}

// writeBody answers with a JSON body already encoded.
func writeBody(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	// The whole body is known: one write with a Content-Length, rather than
	// a chunked body written in 4 KiB pieces.
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// jsonBufs holds response buffers between requests.
var jsonBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// putJSONBuf returns buf to the pool unless one large response grew it
// past what is worth keeping.
func putJSONBuf(buf *bytes.Buffer) {
	if buf.Cap() <= 1<<20 {
		jsonBufs.Put(buf)
	}
}

// decode reads exactly one JSON object into dst, refusing unknown fields,
// trailing data and bodies over the limit. The Content-Type is not
// checked: authentication is by bearer token, never by cookie, so there is
// no cross-site form to guard against, and curl users need not set it. It answers the client itself
// and returns false on any problem.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, dst any) bool {
	return s.decodeFrom(w, http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes), dst)
}

// readBody reads the whole request body, up to the limit; over it, it
// answers 413 itself and returns false.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	rd := http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
	var body []byte
	var err error
	if n := r.ContentLength; n > 0 && n <= s.cfg.MaxBodyBytes {
		// net/http's body ends at its Content-Length: one allocation of
		// that size (io.ReadAll would grow a buffer by doubling).
		body = make([]byte, n)
		_, err = io.ReadFull(rd, body)
	} else {
		body, err = io.ReadAll(rd)
	}
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("request body exceeds %d bytes", mbe.Limit))
		} else {
			writeError(w, http.StatusBadRequest, "malformed_json", "could not read the request body")
		}
		return nil, false
	}
	return body, true
}

// decodeFrom is decode on a body already limited (or read).
func (s *Server) decodeFrom(w http.ResponseWriter, body io.Reader, dst any) bool {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	err := dec.Decode(dst)
	if err == nil {
		if _, extra := dec.Token(); extra != io.EOF {
			err = errors.New("trailing data after the JSON object")
			var mbe *http.MaxBytesError
			if errors.As(extra, &mbe) {
				err = extra
			}
		}
	}
	if err == nil {
		return true
	}
	var (
		mbe  *http.MaxBytesError
		syn  *json.SyntaxError
		typ  *json.UnmarshalTypeError
		code = "malformed_json"
		msg  string
	)
	switch {
	case errors.As(err, &mbe):
		writeError(w, http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprintf("request body exceeds %d bytes", mbe.Limit))
		return false
	case errors.As(err, &syn):
		msg = fmt.Sprintf("malformed JSON at byte %d", syn.Offset)
	case errors.As(err, &typ):
		code = "wrong_type"
		msg = fmt.Sprintf("field %q must be %s", typ.Field, typ.Type)
	case errors.Is(err, io.EOF):
		msg = "request body is empty; send a JSON object"
	case errors.Is(err, io.ErrUnexpectedEOF):
		msg = "request body ends in the middle of the JSON"
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		code = "unknown_field"
		msg = "unknown field " + strings.TrimPrefix(err.Error(), "json: unknown field ")
	default:
		msg = err.Error()
	}
	writeError(w, http.StatusBadRequest, code, msg)
	return false
}
