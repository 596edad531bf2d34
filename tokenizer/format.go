package tokenizer

import (
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
)

// Format is the shape a format-preserving token keeps.
type Format string

// Formats for format-preserving tokens.
const (
	// FormatCard: a payment card number of 13 to 19 digits, spaces or
	// dashes kept where they were. The token keeps the length, the
	// separators and the last four digits; every other digit is random and
	// the whole token fails the Luhn check, so it can never be taken for a
	// real card number.
	FormatCard Format = "card"
	// FormatDigits: a string of 1 to 64 digits. The token is random digits
	// of the same length. Short values have few possible tokens; the
	// vault refuses a value when it cannot find a free one.
	FormatDigits Format = "digits"
	// FormatSSN: a US social security number, NNN-NN-NNNN or NNNNNNNNN. The
	// token is NNN-NN-NNNN with area 900-999 and group 01-49, a range the
	// SSA never issues and that is not an ITIN either, so a token cannot be
	// a real number. Nothing of the value is kept.
	FormatSSN Format = "ssn"
	// FormatEmail: an email address in ASCII (an internationalised domain
	// in its xn-- form), its domain at most MaxEmailDomain characters so
	// the token fits MaxTokenLength. The token keeps the domain (so mail
	// routing and per-domain counts still work) and replaces the local part
	// with 16 random lowercase base32 characters (80 bits); the local
	// part's length is not kept.
	FormatEmail Format = "email"
)

// MaxEmailDomain bounds an email value's domain: its token is 16
// characters, "@" and the domain, and every token a vault hands out must
// be one ParseToken accepts.
const MaxEmailDomain = MaxTokenLength - 17

// Rule says, for a person, what values a format takes.
func (f Format) Rule() string {
	switch f {
	case FormatCard:
		return "13 to 19 digits, single spaces or dashes allowed between them"
	case FormatDigits:
		return "1 to 64 digits"
	case FormatSSN:
		return "NNN-NN-NNNN or NNNNNNNNN"
	case FormatEmail:
		return fmt.Sprintf("an ASCII address (an internationalised domain in its xn-- form) whose domain has at most %d characters", MaxEmailDomain)
	}
	return ""
}

// ErrBadValue reports a value that does not fit the field's format. Its
// text never contains the value.
var ErrBadValue = errors.New("value does not match the field's format")

// Formats lists the supported formats.
var Formats = []Format{FormatCard, FormatDigits, FormatSSN, FormatEmail}

// Valid reports whether f is a supported format.
func (f Format) Valid() bool {
	for _, g := range Formats {
		if f == g {
			return true
		}
	}
	return false
}

// CheckValue reports whether value fits the format.
func CheckValue(f Format, value string) error {
	switch f {
	case FormatCard:
		n := 0
		for i := 0; i < len(value); i++ {
			c := value[i]
			switch {
			case isDigit(c):
				n++
			case (c == ' ' || c == '-') && i > 0 && i < len(value)-1 && isDigit(value[i-1]):
				// One separator between digits, so the token (which keeps
				// the value's shape) stays within MaxTokenLength.
			default:
				return ErrBadValue
			}
		}
		if n < 13 || n > 19 {
			return ErrBadValue
		}
	case FormatDigits:
		if len(value) == 0 || len(value) > 64 || !allDigits(value) {
			return ErrBadValue
		}
	case FormatSSN:
		d := strings.ReplaceAll(value, "-", "")
		if len(d) != 9 || !allDigits(d) || (len(value) != 9 && (len(value) != 11 || value[3] != '-' || value[6] != '-')) {
			return ErrBadValue
		}
	case FormatEmail:
		at := strings.LastIndexByte(value, '@')
		if at < 1 || at == len(value)-1 || len(value) > 254 || len(value)-at-1 > MaxEmailDomain || strings.IndexByte(value[at+1:], '.') < 0 {
			return ErrBadValue
		}
		for i := 0; i < len(value); i++ {
			if value[i] <= ' ' || value[i] > '~' {
				return ErrBadValue
			}
		}
	default:
		return fmt.Errorf("unknown format %q", f)
	}
	return nil
}

// FormatPreserving returns a fresh random token shaped like value. The
// value must already have passed CheckValue.
func FormatPreserving(f Format, value string) (string, error) {
	if err := CheckValue(f, value); err != nil {
		return "", err
	}
	switch f {
	case FormatCard:
		return cardToken(value), nil
	case FormatDigits:
		return string(randomDigits(len(value))), nil
	case FormatSSN:
		d := randomDigits(9)
		d[0] = '9'
		// group 01-49: first digit 0-4, and not 00
		d[3] = '0' + d[3]%5
		if d[3] == '0' && d[4] == '0' {
			d[4] = '1' + d[4]%9
		}
		return string(d[:3]) + "-" + string(d[3:5]) + "-" + string(d[5:]), nil
	case FormatEmail:
		at := strings.LastIndexByte(value, '@')
		local := strings.ToLower(rand.Text()[:16])
		return local + value[at:], nil
	}
	return "", fmt.Errorf("unknown format %q", f)
}

// cardToken keeps separators and the last four digits, randomises the
// rest and makes sure the result fails the Luhn check.
func cardToken(value string) string {
	out := []byte(value)
	var pos []int
	for i := range out {
		if isDigit(out[i]) {
			pos = append(pos, i)
		}
	}
	keep := len(pos) - 4
	r := randomDigits(keep)
	for i, p := range pos[:keep] {
		out[p] = r[i]
	}
	if luhnValid(out) {
		// Changing one digit by 1 changes the Luhn sum by 1 or 2 (mod 10),
		// never by 0, so the result is invalid.
		p := pos[0]
		out[p] = '0' + (out[p]-'0'+1)%10
	}
	return string(out)
}

// LuhnValid reports whether the digits of s pass the Luhn check
// (separators ignored).
func LuhnValid(s string) bool { return luhnValid([]byte(s)) }

func luhnValid(s []byte) bool {
	sum, double, n := 0, false, 0
	for i := len(s) - 1; i >= 0; i-- {
		c := s[i]
		if !isDigit(c) {
			continue
		}
		d := int(c - '0')
		if double {
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
		double = !double
		n++
	}
	return n > 0 && sum%10 == 0
}

// randomDigits returns n uniformly random ASCII digits.
func randomDigits(n int) []byte {
	out := make([]byte, 0, n)
	buf := make([]byte, n+8)
	for len(out) < n {
		rand.Read(buf)
		for _, b := range buf {
			if b < 250 && len(out) < n { // 250 = 25*10: reject to stay uniform
				out = append(out, '0'+b%10)
			}
		}
	}
	return out
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}
