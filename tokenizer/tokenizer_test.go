package tokenizer

import (
	"crypto/hmac"
	"crypto/sha256"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func TestFormatPreserving(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		format Format
		value  string
		check  func(t *testing.T, value, tok string)
	}{
		{"card 16 digits plain", FormatCard, "4111111111111111", checkCard},
		{"card with spaces", FormatCard, "4111 1111 1111 1234", checkCard},
		{"card with dashes", FormatCard, "5500-0000-0000-0004", checkCard},
		{"card 19 digits", FormatCard, "6011000990139424123", checkCard},
		{"digits same length", FormatDigits, "0012345678", func(t *testing.T, v, tok string) {
			if len(tok) != len(v) || !allDigits(tok) {
				t.Errorf("digits token %q for a %d-digit value", tok, len(v))
			}
		}},
		{"ssn dashed", FormatSSN, "123-45-6789", checkSSN},
		{"ssn bare", FormatSSN, "123456789", checkSSN},
		{"email keeps domain", FormatEmail, "Jane.Doe+tag@Example.co.uk", func(t *testing.T, v, tok string) {
			if !strings.HasSuffix(tok, "@Example.co.uk") {
				t.Errorf("email token %q lost the domain", tok)
			}
			if strings.Contains(strings.ToLower(tok), "jane") {
				t.Errorf("email token %q keeps part of the local part", tok)
			}
			if !regexp.MustCompile(`^[a-z2-7]{16}@`).MatchString(tok) {
				t.Errorf("email token %q: local part is not 16 base32 characters", tok)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			seen := map[string]bool{}
			for range 200 {
				tok, err := FormatPreserving(tt.format, tt.value)
				if err != nil {
					t.Fatalf("FormatPreserving: %v", err)
				}
				if tok == tt.value {
					t.Fatalf("token equals the value")
				}
				tt.check(t, tt.value, tok)
				seen[tok] = true
			}
			if len(seen) < 190 {
				t.Errorf("only %d distinct tokens in 200 draws: not random enough", len(seen))
			}
		})
	}
}

var ssnToken = regexp.MustCompile(`^9\d\d-(0[1-9]|[1-4]\d)-\d{4}$`)

func checkSSN(t *testing.T, _, tok string) {
	t.Helper()
	if !ssnToken.MatchString(tok) {
		t.Errorf("ssn token %q is not NNN-NN-NNNN with area 9xx and group 01-49", tok)
	}
}

func checkCard(t *testing.T, value, tok string) {
	t.Helper()
	if len(tok) != len(value) {
		t.Fatalf("card token %q has length %d, value %d", tok, len(tok), len(value))
	}
	for i := range value {
		if isDigit(value[i]) != isDigit(tok[i]) {
			t.Fatalf("card token %q does not keep the separators of the value", tok)
		}
	}
	if tok[len(tok)-4:] != value[len(value)-4:] {
		t.Errorf("card token %q does not keep the last four", tok)
	}
	if LuhnValid(tok) {
		t.Errorf("card token %q passes the Luhn check", tok)
	}
}

func TestLuhn(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in   string
		want bool
	}{
		{"4111111111111111", true},
		{"4111 1111 1111 1111", true},
		{"5500000000000004", true},
		{"4111111111111112", false},
		{"", false},
		{"0", true},
	} {
		if got := LuhnValid(tt.in); got != tt.want {
			t.Errorf("LuhnValid(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestCheckValue(t *testing.T) {
	t.Parallel()
	tests := []struct {
		format Format
		value  string
		ok     bool
	}{
		{FormatCard, "4111111111111111", true},
		{FormatCard, "4111 1111 1111 1111", true},
		{FormatCard, "411111111111", false},         // 12 digits
		{FormatCard, "41111111111111111111", false}, // 20 digits
		{FormatCard, " 4111111111111111", false},
		{FormatCard, "4111x111111111111", false},
		{FormatDigits, "1", true},
		{FormatDigits, "", false},
		{FormatDigits, "12a", false},
		{FormatDigits, strings.Repeat("1", 65), false},
		{FormatSSN, "123-45-6789", true},
		{FormatSSN, "123456789", true},
		{FormatSSN, "12-345-6789", false},
		{FormatSSN, "123-45-678", false},
		{FormatEmail, "a@b.c", true},
		{FormatEmail, "@b.c", false},
		{FormatEmail, "a@b", false},
		{FormatEmail, "a b@c.d", false},
		{FormatEmail, "a@", false},
	}
	for _, tt := range tests {
		err := CheckValue(tt.format, tt.value)
		if (err == nil) != tt.ok {
			t.Errorf("CheckValue(%s, %q) = %v, want ok=%v", tt.format, tt.value, err, tt.ok)
		}
		if err != nil && strings.Contains(err.Error(), tt.value) && tt.value != "" {
			t.Errorf("CheckValue error %q contains the value", err)
		}
	}
}

func TestMask(t *testing.T) {
	t.Parallel()
	tests := []struct {
		mask  Mask
		value string
		want  string
	}{
		{MaskLast4, "4111 1111 1111 1234", "**** **** **** 1234"},
		{MaskLast4, "123-45-6789", "***-**-6789"},
		{MaskLast4, "1234", fullMask},
		{MaskLast4, "", fullMask},
		// Whole characters: marks go with their letter, numerals of every
		// kind are hidden.
		{MaskLast4, "नमस्ते दुनिया", "***ते दुनिया"},
		{MaskLast4, "Jose\u0301 Garci\u0301a", "**** **rci\u0301a"},
		{MaskLast4, "ⅫⅪⅩ-1234", "***-1234"},
		{MaskLast4, "²³¹⁴-5678", "****-5678"},
		{MaskLast4, "٣٤٥٦٧٨", "**٥٦٧٨"},
		{MaskEmail, "jane@example.com", "j***@example.com"},
		{MaskEmail, "not-an-email", fullMask},
		{MaskEmail, "@example.com", fullMask},
		{MaskFull, "anything at all", fullMask},
		{MaskFull, "", fullMask},
	}
	for _, tt := range tests {
		if got := tt.mask.Apply(tt.value); got != tt.want {
			t.Errorf("%s.Apply(%q) = %q, want %q", tt.mask, tt.value, got, tt.want)
		}
	}
}

// hmacPRF is a test PRF: real HMAC-SHA256 under a fixed key. Production
// uses a Tink PRF keyset (tested in package vault).
type hmacPRF []byte

func (k hmacPRF) Compute(in []byte, n uint32) ([]byte, error) {
	m := hmac.New(sha256.New, k)
	m.Write(in)
	return m.Sum(nil)[:n], nil
}

func TestDeterministic(t *testing.T) {
	t.Parallel()
	k1, k2 := hmacPRF("key one"), hmacPRF("key two")
	tok := func(k PRF, field, v string) string {
		s, err := Deterministic(k, field, []byte(v))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a := tok(k1, "salary", "100")
	if a != tok(k1, "salary", "100") {
		t.Error("same key, field and value gave different tokens")
	}
	for name, other := range map[string]string{
		"other value":          tok(k1, "salary", "101"),
		"other field":          tok(k1, "bonus", "100"),
		"other key":            tok(k2, "salary", "100"),
		"field/value boundary": tok(k1, "salary1", "00"),
	} {
		if other == a {
			t.Errorf("%s gave the same token", name)
		}
	}
	if _, err := ParseToken(a); err != nil || !strings.HasPrefix(a, DeterministicPrefix) {
		t.Errorf("deterministic token %q does not parse: %v", a, err)
	}
}

func TestRandomTokens(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 1000 {
		tok := Random()
		if _, err := ParseToken(tok); err != nil {
			t.Fatalf("random token %q does not parse: %v", tok, err)
		}
		if seen[tok] {
			t.Fatalf("random token repeated: %q", tok)
		}
		seen[tok] = true
	}
}

func TestParseToken(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in string
		ok bool
	}{
		{Random(), true},
		{"4111 1111 1111 1234", true},
		{"", false},
		{"tok_short", false},
		{"tok_" + strings.Repeat("A", 25) + "1", false}, // 1 is not base32
		{"dtk_" + strings.Repeat("A", 27), false},
		{strings.Repeat("a", MaxTokenLength+1), false},
		{"bad\x00token", false},
		{" padded", false},
		{"é", false},
	} {
		if _, err := ParseToken(tt.in); (err == nil) != tt.ok {
			t.Errorf("ParseToken(%q) = %v, want ok=%v", tt.in, err, tt.ok)
		}
	}
}

func FuzzParseToken(f *testing.F) {
	for _, s := range []string{Random(), "dtk_AAAAAAAAAAAAAAAAAAAAAAAAAA", "4111 1111 1111 1234", "", "tok_", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseToken(s)
		if err != nil {
			return
		}
		if got != s || len(s) == 0 || len(s) > MaxTokenLength {
			t.Fatalf("ParseToken accepted %q", s)
		}
	})
}

func FuzzFormatPreserving(f *testing.F) {
	for _, s := range []string{"4111111111111111", "4111 1111 1111 1234", "123-45-6789", "a@b.c", "12345", "x@bücher.de", "x@" + strings.Repeat("d", 120) + ".com"} {
		for _, fm := range Formats {
			f.Add(string(fm), s)
		}
	}
	f.Fuzz(func(t *testing.T, format, value string) {
		fm := Format(format)
		if !fm.Valid() || CheckValue(fm, value) != nil {
			return
		}
		tok, err := FormatPreserving(fm, value)
		if err != nil {
			t.Fatalf("FormatPreserving(%s, %q) after CheckValue passed: %v", fm, value, err)
		}
		// Every token handed out must be one a client can present again.
		if _, err := ParseToken(tok); err != nil {
			t.Fatalf("%s token %q for an accepted value is not a parseable token", fm, tok)
		}
		switch fm {
		case FormatCard:
			checkCard(t, value, tok)
		case FormatSSN:
			checkSSN(t, value, tok)
		case FormatDigits:
			if len(tok) != len(value) || !allDigits(tok) {
				t.Fatalf("digits token %q for %q", tok, value)
			}
		case FormatEmail:
			if tok[strings.LastIndexByte(tok, '@'):] != value[strings.LastIndexByte(value, '@'):] {
				t.Fatalf("email token %q lost the domain of %q", tok, value)
			}
		}
	})
}

func FuzzMask(f *testing.F) {
	for _, s := range []string{"4111 1111 1111 1234", "jane@example.com", "", "é@x", "ab", "नमस्ते दुनिया", "ⅫⅪⅩ-1234", "e\u0301e\u0301e\u0301e\u0301e\u0301"} {
		f.Add(s)
	}
	// What each mask may show: last4 at most four letters or digits, in
	// place; email the first character and the domain; full nothing. (A
	// value that already looks masked may come back unchanged: that shows
	// nothing more.)
	f.Fuzz(func(t *testing.T, value string) {
		if got := MaskFull.Apply(value); got != fullMask {
			t.Fatalf("full mask of %q = %q", value, got)
		}
		if got := MaskLast4.Apply(value); got != fullMask {
			// One character out for each in; each either a '*' hiding
			// one, a separator, or one of the last four, unchanged.
			in, out := graphemes(value), graphemes(got)
			if len(in) != len(out) {
				t.Fatalf("last4 of %q = %q: %d characters for %d", value, got, len(out), len(in))
			}
			shown := 0
			for i := range in {
				switch {
				case out[i] == in[i] && classify(in[i]) == separator:
				case out[i] == in[i] && classify(in[i]) == content:
					shown++
				case out[i] != "*":
					t.Fatalf("last4 of %q = %q: character %d changed into %q", value, got, i, out[i])
				}
			}
			if shown > 4 {
				t.Fatalf("last4 of %q = %q: %d characters shown", value, got, shown)
			}
		}
		if got := MaskEmail.Apply(value); got != fullMask {
			at := strings.LastIndexByte(value, '@')
			if at < 1 || got != value[:1]+"***"+value[at:] {
				t.Fatalf("email mask of %q = %q", value, got)
			}
		}
	})
}

// TestTokensSource: a batch's tokens look like Random's (prefix, 26
// characters of rand.Text's alphabet) and never repeat; the random bytes
// a source drew are cleared as each token is made, and by Clear.
func TestTokensSource(t *testing.T) {
	src := NewTokens(100)
	seen := map[string]bool{}
	for i := range 1000 {
		tok := src.Random()
		if len(tok) != len(Random()) || !strings.HasPrefix(tok, RandomPrefix) {
			t.Fatalf("token %d: %q", i, tok)
		}
		for _, c := range tok[len(RandomPrefix):] {
			if !strings.ContainsRune(textAlphabet, c) {
				t.Fatalf("token %q: %q is not in the alphabet", tok, c)
			}
		}
		if seen[tok] {
			t.Fatalf("token %q drawn twice", tok)
		}
		seen[tok] = true
		if slices.ContainsFunc(src.block[:src.off], func(b byte) bool { return b != 0 }) {
			t.Fatalf("after token %d, used random bytes are still in the source", i)
		}
		if i == 10 {
			block := src.block
			src.Clear()
			if slices.ContainsFunc(block, func(b byte) bool { return b != 0 }) {
				t.Fatal("Clear left random bytes in the source")
			}
		}
	}
}
