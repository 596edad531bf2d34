package tokenizer

import (
	"strings"
	"unicode"
)

// Mask is how a value is shown to a grant that reveals masked values only.
type Mask string

// Masks a field may choose.
const (
	// MaskLast4 hides every letter and digit but the last four, keeping
	// separators: "4111 1111 1111 1234" -> "**** **** **** 1234".
	MaskLast4 Mask = "last4"
	// MaskEmail keeps the first character of the local part and the
	// domain: "jane@example.com" -> "j***@example.com".
	MaskEmail Mask = "email"
	// MaskFull hides everything, including the length: "********".
	MaskFull Mask = "full"
)

// Valid reports whether m is a supported mask.
func (m Mask) Valid() bool { return m == MaskLast4 || m == MaskEmail || m == MaskFull }

const fullMask = "********"

// Apply masks value. A value too short to show anything safely, or not
// shaped for the mask, is masked fully.
func (m Mask) Apply(value string) string {
	switch m {
	case MaskLast4:
		if len(value) > 256 {
			return fullMask
		}
		rs := []rune(value)
		shown := 0
		for _, r := range rs {
			if isLetterOrDigit(r) {
				shown++
			}
		}
		if shown <= 4 {
			return fullMask
		}
		// Letters and digits in any script are hidden, one '*' each, so
		// the shape stays and only the last four show.
		hide := shown - 4
		for i := 0; i < len(rs) && hide > 0; i++ {
			if isLetterOrDigit(rs[i]) {
				rs[i] = '*'
				hide--
			}
		}
		return string(rs)
	case MaskEmail:
		at := strings.LastIndexByte(value, '@')
		if at < 1 || at == len(value)-1 || value[0] >= 0x80 {
			return fullMask
		}
		return value[:1] + "***" + value[at:]
	}
	return fullMask
}

func isLetterOrDigit(r rune) bool { return unicode.IsLetter(r) || unicode.IsDigit(r) }
