package vault

import (
	"math"
	"strconv"
	"strings"
)

// Numbers are compared and tokenized as the 64-bit floats JSON numbers
// decode to, so a number is stored only when its float64 is exactly the
// decimal it was written as: 0.1 and 150000 are, 9007199254740993 (2^53+1)
// and 150000.00000000001 are not, since they would round to a neighbour
// (two values sharing one deterministic token; a value slipping under an
// approval threshold). Identifiers and amounts with more significant
// digits than a float64 holds (about 15) belong in string fields.

// exactNumber parses a JSON number literal and reports whether its float64
// holds exactly the decimal value written.
func exactNumber(lit string) (float64, bool) {
	x, err := strconv.ParseFloat(lit, 64)
	if err != nil || math.IsInf(x, 0) || math.IsNaN(x) {
		return 0, false
	}
	want, ok := decimalOf(lit)
	if !ok {
		return 0, false
	}
	got, _ := decimalOf(strconv.FormatFloat(x, 'g', -1, 64))
	return x, want == got
}

// decimal is a number as significant digits (no leading or trailing
// zeros) times ten to exp; zero has no digits.
type decimal struct {
	neg    bool
	digits string
	exp    int
}

// decimalOf reads a JSON-style number literal (or strconv's 'g' output)
// into its decimal value.
func decimalOf(s string) (decimal, bool) {
	var d decimal
	if rest, ok := strings.CutPrefix(s, "-"); ok {
		d.neg, s = true, rest
	}
	mant, expPart, hasExp := strings.Cut(strings.ToLower(s), "e")
	intPart, frac, _ := strings.Cut(mant, ".")
	if intPart == "" || !allDigits(intPart) || !allDigits(frac) {
		return d, false
	}
	digits := strings.TrimLeft(intPart+frac, "0")
	if digits == "" {
		return decimal{}, !hasExp || validExponent(expPart)
	}
	if hasExp {
		// Values are at most MaxValueBytes long, so subtracting the
		// fraction's length cannot overflow an exponent Atoi accepts.
		e, err := strconv.Atoi(expPart)
		if err != nil {
			return d, false
		}
		d.exp = e
	}
	d.exp -= len(frac)
	trimmed := strings.TrimRight(digits, "0")
	d.exp += len(digits) - len(trimmed)
	d.digits = trimmed
	return d, true
}

// validExponent reports whether s is an optionally signed run of digits.
func validExponent(s string) bool {
	s = strings.TrimLeft(s, "+-")
	return s != "" && allDigits(s)
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
