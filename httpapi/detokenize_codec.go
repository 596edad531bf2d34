package httpapi

import (
	"bytes"
	"net/http"

	"github.com/agentvault/agentvault/internal/jsontext"
	"github.com/agentvault/agentvault/vault"
)

// A detokenize's body and answer, read and written by hand as a create's
// are (records_codec.go): the plain shape, {"tokens":[...],"purpose":...,
// "approval_id":...} with plain strings, each key at most once, is read
// here; anything else goes through encoding/json. FuzzDetokenizeBody and
// FuzzDetokenizeAnswer hold both to encoding/json.

// parseDetokenizeBody reads a detokenize's body, or reports false for
// anything but the plain shape.
func parseDetokenizeBody(b []byte) (vault.DetokenizeRequest, bool) {
	var req vault.DetokenizeRequest
	p := scanner{b: b}
	if !p.lit('{') {
		return req, false
	}
	var seenTokens, seenPurpose, seenApproval bool
	if p.peek() == '}' {
		return req, false // encoding/json's answer: no tokens
	}
	for {
		k, ok := p.plain()
		if !ok || !p.lit(':') {
			return req, false
		}
		switch {
		case k == "tokens" && !seenTokens:
			seenTokens = true
			if !p.lit('[') {
				return req, false
			}
			req.Tokens = []string{}
			if !p.lit(']') {
				for {
					s, ok := p.plain()
					if !ok {
						return req, false
					}
					req.Tokens = append(req.Tokens, s)
					if p.lit(',') {
						continue
					}
					if !p.lit(']') {
						return req, false
					}
					break
				}
			}
		case k == "purpose" && !seenPurpose:
			seenPurpose = true
			if req.Purpose, ok = p.plain(); !ok {
				return req, false
			}
		case k == "approval_id" && !seenApproval:
			seenApproval = true
			if req.ApprovalID, ok = p.plain(); !ok {
				return req, false
			}
		default:
			return req, false
		}
		if p.lit(',') {
			continue
		}
		if !p.lit('}') {
			return req, false
		}
		break
	}
	p.ws()
	return req, p.i == len(p.b)
}

// appendDetokenizeAnswer appends what writeJSON writes for
// {"results": res}.
func appendDetokenizeAnswer(dst []byte, res []vault.DetokenizeResult) []byte {
	return appendAnswer(dst, `{"results":`, res, appendResult)
}

func appendResult(dst []byte, r *vault.DetokenizeResult) []byte {
	dst = append(dst, `{"token":`...)
	dst = jsontext.AppendString(dst, r.Token)
	dst = append(dst, `,"status":`...)
	dst = jsontext.AppendString(dst, r.Status)
	if len(r.Value) > 0 {
		dst = append(dst, `,"value":`...)
		dst = appendRaw(dst, r.Value)
	}
	if r.Reason != "" {
		dst = append(dst, `,"reason":`...)
		dst = jsontext.AppendString(dst, r.Reason)
	}
	if r.ApprovalID != "" {
		dst = append(dst, `,"approval_id":`...)
		dst = jsontext.AppendString(dst, r.ApprovalID)
	}
	return append(dst, '}')
}

// writeAnswer writes an answer a hand-written encoder appends.
func writeAnswer(w http.ResponseWriter, status int, appendTo func([]byte) []byte) {
	buf := jsonBufs.Get().(*bytes.Buffer)
	defer putJSONBuf(buf)
	buf.Reset()
	buf.Write(appendTo(buf.AvailableBuffer()))
	writeBody(w, status, buf.Bytes())
}
