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
func checkPurpose(p string) error {
	if p == "" || len(p) > MaxPurposeLen {
		return invalid("invalid_purpose", "purpose is required, at most %d characters", MaxPurposeLen)
	}
	if !printableText(p) {
		return invalid("invalid_purpose", "purpose must be printable text: no control, format or bidirectional characters")
	}
	return nil
}

// checkReason validates an approver's reason.
func checkReason(r string) error {
	if r == "" || len(r) > MaxReasonLen {
		return invalid("invalid_reason", "a reason is required, at most %d characters", MaxReasonLen)
	}
	if !printableText(r) {
		return invalid("invalid_reason", "reason must be printable text: no control, format or bidirectional characters")
	}
	return nil
}
