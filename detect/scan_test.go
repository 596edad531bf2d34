package detect

import (
	"slices"
	"strings"
	"testing"
)

// scanned is scanAll's matches, as FindAllStringIndex returns them.
func scanned(text string, at func(string, int) int) [][]int {
	var out [][]int
	scanAll(text, at, func(start, end int) { out = append(out, []int{start, end}) })
	return out
}

// byHand is every pattern matched by hand, with its regexp.
func byHand() []pattern {
	var out []pattern
	for _, p := range patterns {
		if p.at != nil {
			out = append(out, p)
		}
	}
	return out
}

// TestScannersMatchTheirRegexps: on texts built around each pattern's
// choices (repetition counts, optional parts, boundaries, alternation
// order), the hand-written matcher finds what the regexp finds.
func TestScannersMatchTheirRegexps(t *testing.T) {
	texts := []string{
		"", "1", "12", "123 ", "+123", "+123 ", "+12345 678", "+1 (555) 123-4567", "(12345) 678", "(1) 2",
		"+1 415 555 2671 and 415.555.2671, 0044 20 7946 0958 or 12345678901234567890123456789012345",
		"1 2 3 4 5 6 7 8 9 0 1 2 3 4", "1-2-3", "12--34", "++1 23", "+(1) 23", "(12)-34.56",
		"4111 1111 1111 1111 4111 1111", "4111111111111111", "x4111111111111111", "4111111111111111x",
		"4111-1111-1111-1111-1111-1111", "4111 1111 1111 11 11 1", "1234567890123 ", " 1234567890123_",
		"123-45-6789", "a123-45-6789", "123-45-67890", "123-45-6789-", "1234-56-7890", "123-456-789",
		"10.0.0.1", "256.1.1.1", "1.2.3.256", "1.2.3.25", "01.02.03.04", "255.255.255.255", "249.250.199.100",
		"1.2.3.4.5", "1.2.3", "1..2.3.4", "300.1.1.1", "2.2.2.2x", "_1.1.1.1", "19.168.1.1 192.168.1.1",
	}
	for _, p := range byHand() {
		for _, text := range texts {
			if got, want := scanned(text, p.at), p.re.FindAllStringIndex(text, -1); !equalMatches(got, want) {
				t.Errorf("%s: by hand %v, regexp %v, in %q", p.typ, got, want, text)
			}
		}
	}
}

// FuzzScanners: on any text, each hand-written matcher finds what its
// regexp finds.
func FuzzScanners(f *testing.F) {
	f.Add("+1 (415) 555-2671 4111 1111 1111 1111 123-45-6789 10.0.0.1 256.1.1.1")
	f.Add("12345678901234567890123456789012345 1.2.3.4.5 ++1 23 (12)-34.56")
	f.Add(strings.Repeat("9 ", 40))
	f.Fuzz(func(t *testing.T, text string) {
		for _, p := range byHand() {
			if got, want := scanned(text, p.at), p.re.FindAllStringIndex(text, -1); !equalMatches(got, want) {
				t.Fatalf("%s: by hand %v, regexp %v, in %q", p.typ, got, want, text)
			}
		}
	})
}

func equalMatches(a, b [][]int) bool {
	return slices.EqualFunc(a, b, func(x, y []int) bool { return slices.Equal(x, y) })
}
