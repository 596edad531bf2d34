package detect

// Hand-written matchers for the digit-shaped patterns (cards, SSNs, IPv4
// addresses, phone numbers). Each finds exactly what its pattern's regexp
// finds with FindAllStringIndex on the same string, leftmost-first, as a
// backtracking engine would choose (FuzzScanners holds them to it; the
// regexps stay as the reference), without the regexp engine's cost: no
// instruction dispatch, no visited-state bitmap, no match slices beyond
// the result.

// scanAll emits the leftmost-first, non-overlapping matches of at in s:
// at(s, i) is the end of the match starting at i, or -1 if none does.
// Every match is non-empty.
func scanAll(s string, at func(s string, i int) int, emit func(start, end int)) {
	for i := 0; i < len(s); {
		if e := at(s, i); e > i {
			emit(i, e)
			i = e
			continue
		}
		i++
	}
}

func isWord(c byte) bool { return isAlnum(c) || c == '_' }

// wordBoundary is regexp's \b at i: a word byte on one side only.
func wordBoundary(s string, i int) bool {
	return (i > 0 && isWord(s[i-1])) != (i < len(s) && isWord(s[i]))
}

// digitRun is the number of digits at s[i:], at most max.
func digitRun(s string, i, max int) int {
	n := 0
	for n < max && i+n < len(s) && isDigit(s[i+n]) {
		n++
	}
	return n
}

// cardAt matches \b\d(?:[ -]?\d){12,18}\b at i. Each repetition is
// decided by the text (a separator must be followed by a digit), so the
// only choice left is how many, most first, until \b holds after them.
func cardAt(s string, i int) int {
	if !isDigit(s[i]) || !wordBoundary(s, i) {
		return -1
	}
	var ends [19]int
	p, k := i+1, 0
	for k < 18 {
		q := p
		if q < len(s) && (s[q] == ' ' || s[q] == '-') {
			q++
		}
		if q >= len(s) || !isDigit(s[q]) {
			break
		}
		p, k = q+1, k+1
		ends[k] = p
	}
	for ; k >= 12; k-- {
		if wordBoundary(s, ends[k]) {
			return ends[k]
		}
	}
	return -1
}

// ssnAt matches \b\d{3}-\d{2}-\d{4}\b at i.
func ssnAt(s string, i int) int {
	if len(s)-i < 11 || !wordBoundary(s, i) {
		return -1
	}
	for k := range 11 {
		c := s[i+k]
		if k == 3 || k == 6 {
			if c != '-' {
				return -1
			}
		} else if !isDigit(c) {
			return -1
		}
	}
	if !wordBoundary(s, i+11) {
		return -1
	}
	return i + 11
}

// ipv4At matches \b(?:octet\.){3}octet\b at i, where octet is
// 25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d, tried in that order.
func ipv4At(s string, i int) int {
	if !isDigit(s[i]) || !wordBoundary(s, i) {
		return -1
	}
	return octets(s, i, 0)
}

// octets matches octet number n (0 to 3) at p and what follows it.
func octets(s string, p, n int) int {
	lens, k := octetLengths(s, p)
	for _, l := range lens[:k] {
		e := p + l
		if n == 3 {
			if wordBoundary(s, e) {
				return e
			}
		} else if e < len(s) && s[e] == '.' {
			if r := octets(s, e+1, n+1); r >= 0 {
				return r
			}
		}
	}
	return -1
}

// octetLengths lists the lengths an octet at p can have, in the order the
// alternation tries them: three digits (one of 25[0-5], 2[0-4]\d, 1\d\d),
// then [1-9]?\d with its optional digit taken, then without.
func octetLengths(s string, p int) (lens [3]int, k int) {
	d := digitRun(s, p, 3)
	if d == 3 {
		a, b, c := s[p], s[p+1], s[p+2]
		if a == '1' || a == '2' && (b <= '4' || b == '5' && c <= '5') {
			lens[k], k = 3, k+1
		}
	}
	if d >= 2 && s[p] != '0' {
		lens[k], k = 2, k+1
	}
	if d >= 1 {
		lens[k], k = 1, k+1
	}
	return lens, k
}

func isPhoneSep(c byte) bool { return c == ' ' || c == '.' || c == '-' }

// phoneAt matches the phone pattern at i:
//
//	(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{1,5}(?:[ .-]?\d{1,5}){1,5}
//
// trying its choices in the order a backtracking engine does: optional
// parts taken before left out, repetitions longest first.
func phoneAt(s string, i int) int {
	if s[i] == '+' {
		for k := digitRun(s, i+1, 3); k >= 1; k-- {
			if r := thenSep(s, i+1+k, phoneArea); r >= 0 {
				return r
			}
		}
	}
	return phoneArea(s, i)
}

// phoneArea matches (?:\(\d{1,4}\)[ .-]?)? and the number after it at p.
func phoneArea(s string, p int) int {
	if p < len(s) && s[p] == '(' {
		// \d{1,4} can end only where the digits do: ')' is no digit.
		if k := digitRun(s, p+1, 4); k >= 1 {
			if q := p + 1 + k; q < len(s) && s[q] == ')' {
				if r := thenSep(s, q+1, phoneNumber); r >= 0 {
					return r
				}
			}
		}
	}
	return phoneNumber(s, p)
}

// thenSep matches [ .-]? at q and then next, the separator taken first.
func thenSep(s string, q int, next func(s string, p int) int) int {
	if q < len(s) && isPhoneSep(s[q]) {
		if r := next(s, q+1); r >= 0 {
			return r
		}
	}
	return next(s, q)
}

// phoneNumber matches \d{1,5}(?:[ .-]?\d{1,5}){1,5} at p (the phone
// pattern without its prefixes).
func phoneNumber(s string, p int) int {
	for k := digitRun(s, p, 5); k >= 1; k-- {
		if r := phoneGroups(s, p+k, 0); r >= 0 {
			return r
		}
	}
	return -1
}

// phoneGroups matches (?:[ .-]?\d{1,5}) repeated from n times so far up
// to 5, at least once in all, at p. Nothing follows the repetition in the
// pattern, so once it has matched once, a further group that can start
// always completes the match.
func phoneGroups(s string, p, n int) int {
	if n < 5 {
		if p < len(s) && isPhoneSep(s[p]) {
			if k := digitRun(s, p+1, 5); k >= 1 {
				return phoneGroups(s, p+1+k, n+1)
			}
		}
		if k := digitRun(s, p, 5); k >= 1 {
			return phoneGroups(s, p+k, n+1)
		}
	}
	if n >= 1 {
		return p
	}
	return -1
}
