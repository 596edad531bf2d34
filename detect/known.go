package detect

import (
	"unicode"
	"unicode/utf8"
)

// Known values: values held elsewhere (the vault's fields marked for
// detection) found in text by exact match of their normalized form. The
// normalized form is the value's words, lower-cased, joined by one space:
// a word is a run of letters, digits and marks, with the connectors
// - _ . ' ’ @ + allowed between them (so "O'Brien", "ACC-0042" and
// "jane.doe@example.com" are one word each), and anything else separates
// words. Matching is thus insensitive to case, to whitespace and to the
// punctuation around words, and never starts or ends inside a word.

// Bounds on a known value: a longer one is not matched.
const (
	MaxKnownWords = 8
	MaxKnownBytes = 256
)

// Known answers whether a normalized span of text is a known value. Find
// asks it about spans of 1 to MaxKnownWords words, longest first, only
// for word counts it has; an implementation must not grow slower with the
// number of values it holds (a hash set, not a list).
type Known interface {
	HasWords(n int) bool
	Lookup(norm []byte) (typ string, ok bool)
}

// Normalize returns a value's normalized form, and false when it has no
// word or exceeds MaxKnownWords words or MaxKnownBytes bytes (it would
// never be matched).
func Normalize(v string) (string, bool) {
	var sc wordScanner
	sc.scan(v)
	if n := len(sc.words); n == 0 || n > MaxKnownWords || len(sc.norm) > MaxKnownBytes {
		return "", false
	}
	return string(sc.norm), true
}

// word is one word: its offsets in the text and in the normalized buffer.
type word struct{ start, end, ns, ne int }

type wordScanner struct {
	words []word
	norm  []byte // the words lower-cased, one space between them
}

// Byte classes for ASCII.
const (
	sep = iota
	letter
	connector
)

var asciiClass = func() (t [utf8.RuneSelf]uint8) {
	for c := range utf8.RuneSelf {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
			t[c] = letter
		case c == '-', c == '_', c == '.', c == '\'', c == '@', c == '+':
			t[c] = connector
		}
	}
	return t
}()

// class returns the class of the rune at text[i] and its width.
func class(text string, i int) (uint8, rune, int) {
	if c := text[i]; c < utf8.RuneSelf {
		return asciiClass[c], rune(c), 1
	}
	r, w := utf8.DecodeRuneInString(text[i:])
	switch {
	case r == '’':
		return connector, '\'', w
	case unicode.IsLetter(r), unicode.IsDigit(r), unicode.IsMark(r):
		return letter, r, w
	}
	return sep, r, w
}

// scan splits text into words and fills the normalized buffer.
func (sc *wordScanner) scan(text string) {
	sc.words, sc.norm = sc.words[:0], sc.norm[:0]
	for i := 0; i < len(text); {
		cl, _, w := class(text, i)
		if cl != letter {
			i += w
			continue
		}
		if len(sc.words) > 0 {
			sc.norm = append(sc.norm, ' ')
		}
		wd := word{start: i, ns: len(sc.norm)}
		// The word runs over letters and connectors and ends at its last
		// letter: connectors at its end belong to no word.
		end, nend := i, len(sc.norm)
		for i < len(text) {
			cl, r, w := class(text, i)
			if cl == sep {
				break
			}
			if r < utf8.RuneSelf {
				c := byte(r)
				if c >= 'A' && c <= 'Z' {
					c += 'a' - 'A'
				}
				sc.norm = append(sc.norm, c)
			} else {
				sc.norm = utf8.AppendRune(sc.norm, unicode.ToLower(r))
			}
			i += w
			if cl == letter {
				end, nend = i, len(sc.norm)
			}
		}
		sc.norm = sc.norm[:nend]
		wd.end, wd.ne = end, nend
		sc.words = append(sc.words, wd)
	}
}

// findKnown returns the known values in text, longest match first at each
// word, none overlapping. keep filters the types reported.
func findKnown(text string, k Known, keep func(typ string) bool) []Entity {
	var sc wordScanner
	sc.scan(text)
	var out []Entity
	ws := sc.words
	for i := 0; i < len(ws); {
		n := min(MaxKnownWords, len(ws)-i)
		for ; n > 0; n-- {
			if !k.HasWords(n) {
				continue
			}
			norm := sc.norm[ws[i].ns:ws[i+n-1].ne]
			if len(norm) > MaxKnownBytes {
				continue
			}
			if typ, ok := k.Lookup(norm); ok && keep(typ) {
				out = append(out, Entity{Type: typ, Start: ws[i].start, End: ws[i+n-1].end})
				break
			}
		}
		i += max(n, 1)
	}
	return out
}
