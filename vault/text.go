package vault

import (
	"unicode"
	"unicode/utf8"
)

// Limits on free text a person or agent writes into the audit log.
const (
	MaxPurposeLen = 200
	MaxReasonLen  = 1000
)

// printableText reports whether s is valid UTF-8 without control, format
// or line-separator characters. Those (newlines, U+202E and the other
// bidirectional overrides, zero-width characters) could make an audit row
// or a console line read differently from what was stored.
func printableText(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp, unicode.Co, unicode.Cs) || r == utf8.RuneError {
			return false
		}
	}
	return true
}

// checkPurpose validates a purpose given with a grant or a request.
func checkPurpose(p string) error { return checkLabel(p, "purpose", MaxPurposeLen) }

// checkReason validates an approver's reason.
func checkReason(r string) error { return checkLabel(r, "reason", MaxReasonLen) }

// checkLabel validates a short required text that is kept in the audit
// log and shown to people: what names it in answers (invalid_<what>).
func checkLabel(v, what string, max int) error {
	if v == "" || len(v) > max {
		return invalid("invalid_"+what, "%s is required, at most %d characters", what, max)
	}
	if !printableText(v) {
		return invalid("invalid_"+what, "%s must be printable text: no control, format or bidirectional characters", what)
	}
	return nil
}
