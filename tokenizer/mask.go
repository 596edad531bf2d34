package tokenizer

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/rivo/uniseg"
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
		clusters := graphemes(value)
		shown := 0
		for _, c := range clusters {
			if classify(c) == content {
				shown++
			}
		}
		if shown <= 4 {
			return fullMask
		}
		// Every character but separators is hidden whole, one '*' per
		// user-perceived character (a letter with its combining marks, a
		// numeral of any kind, a symbol), so the shape stays and only the
		// last four show. Controls and stray marks are always hidden: a
		// stray mark shown after a '*' would join it.
		hide := shown - 4
		var b strings.Builder
		for _, c := range clusters {
			switch k := classify(c); {
			case k == separator:
				b.WriteString(c)
			case k == hidden || hide > 0:
				b.WriteByte('*')
				if k == content {
					hide--
				}
			default:
				b.WriteString(c)
			}
		}
		return b.String()
	case MaskEmail:
		at := strings.LastIndexByte(value, '@')
		if at < 1 || at == len(value)-1 || value[0] >= 0x80 {
			return fullMask
		}
		return value[:1] + "***" + value[at:]
	}
	return fullMask
}

// graphemes splits s into user-perceived characters (Unicode grapheme
// clusters).
func graphemes(s string) []string {
	var out []string
	state := -1
	for s != "" {
		var c string
		c, s, _, state = uniseg.FirstGraphemeClusterInString(s, state)
		out = append(out, c)
	}
	return out
}

// Kinds of character for last4.
const (
	separator = iota // a lone space or punctuation mark: kept in place
	content          // hidden, except the last four
	hidden           // a control, format character or stray mark: always hidden
)

// classify says what last4 does with a character (a grapheme cluster).
func classify(c string) int {
	r, n := utf8.DecodeRuneInString(c)
	switch {
	case r == utf8.RuneError:
		return hidden
	case n == len(c) && (unicode.Is(unicode.Zs, r) || unicode.IsPunct(r)):
		return separator
	case unicode.In(r, unicode.C, unicode.M):
		return hidden
	}
	return content
}
