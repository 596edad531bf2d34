package detect

import (
	"slices"
	"strings"
	"testing"
)

// setKnown is a Known over a map, standing in for the vault's keyed-hash
// index in tests of the matching itself.
type setKnown struct {
	types map[string]string // normalized value -> type
	words [MaxKnownWords + 1]bool
}

func newSetKnown(t testing.TB, values map[string]string) *setKnown {
	k := &setKnown{types: map[string]string{}}
	for v, typ := range values {
		norm, ok := Normalize(v)
		if !ok {
			t.Fatalf("Normalize(%q) refused", v)
		}
		k.types[norm] = typ
		k.words[strings.Count(norm, " ")+1] = true
	}
	return k
}

func (k *setKnown) HasWords(n int) bool { return k.words[n] }
func (k *setKnown) Lookup(norm []byte) (string, bool) {
	typ, ok := k.types[string(norm)]
	return typ, ok
}

func TestNormalize(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"Jane Doe", "jane doe", true},
		{"  JANE\t\n doe  ", "jane doe", true},
		{"Doe, Jane", "doe jane", true},
		{"Mary-Jane O'Brien", "mary-jane o'brien", true},
		{"Mary-Jane O’Brien", "mary-jane o'brien", true},
		{"ACC-0042.", "acc-0042", true},
		{"--ACC-0042--", "acc-0042", true},
		{"jane.doe@example.com", "jane.doe@example.com", true},
		{"Müller ÉCOLE", "müller école", true},
		{"李小龍", "李小龍", true},
		{"one two three four five six seven eight", "one two three four five six seven eight", true},
		{"one two three four five six seven eight nine", "", false},
		{"", "", false},
		{" -- ... ", "", false},
		{strings.Repeat("x", MaxKnownBytes+1), "", false},
	} {
		got, ok := Normalize(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("Normalize(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestFindKnown(t *testing.T) {
	k := newSetKnown(t, map[string]string{
		"Jane Doe":          "customers.name",
		"Jane Doe-Smith":    "customers.name",
		"ACC-0042":          "accounts.number",
		"Müller":            "customers.name",
		"jane@example.com":  "customers.email",
		"Jane":              "customers.first",
		"Acme Holdings Ltd": "clients.name",
	})
	for _, tc := range []struct {
		text string
		want []string // the spans found, with their types
	}{
		{"Please call JANE   doe today.", []string{"customers.name:JANE   doe"}},
		{"Jane Doe-Smith paid", []string{"customers.name:Jane Doe-Smith"}}, // the longest match
		{"Jane Doex paid", []string{"customers.first:Jane"}},               // never inside a word
		{"Janet Doe", nil},
		{"account ACC-0042, not ACC-00421", []string{"accounts.number:ACC-0042"}},
		{"(acc-0042)", []string{"accounts.number:acc-0042"}},
		{"Herr MÜLLER schrieb", []string{"customers.name:MÜLLER"}},
		{"mail jane@example.com.", []string{"customers.email:jane@example.com"}},
		{"acme\nholdings ltd.", []string{"clients.name:acme\nholdings ltd"}},
		{"Jane Doe and Jane", []string{"customers.name:Jane Doe", "customers.first:Jane"}},
	} {
		var got []string
		for _, e := range Find(tc.text, Options{Known: k, Types: []string{"customers.name", "customers.first", "customers.email", "accounts.number", "clients.name"}}) {
			got = append(got, e.Type+":"+tc.text[e.Start:e.End])
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%q: found %q, want %q", tc.text, got, tc.want)
		}
	}
}

// A known value wins over a pattern's candidate on the same span, and the
// types filter applies to known values as to patterns.
func TestKnownBeforePatterns(t *testing.T) {
	k := newSetKnown(t, map[string]string{"jane@example.com": "customers.email"})
	text := "write to jane@example.com or bob@example.com"
	var got []string
	for _, e := range Find(text, Options{Known: k}) {
		got = append(got, e.Type+":"+text[e.Start:e.End])
	}
	want := []string{"customers.email:jane@example.com", "EMAIL:bob@example.com"}
	if !slices.Equal(got, want) {
		t.Errorf("found %q, want %q", got, want)
	}
	got = got[:0]
	for _, e := range Find(text, Options{Known: k, Types: []string{Email}}) {
		got = append(got, e.Type+":"+text[e.Start:e.End])
	}
	want = []string{"EMAIL:jane@example.com", "EMAIL:bob@example.com"}
	if !slices.Equal(got, want) {
		t.Errorf("types [EMAIL]: found %q, want %q", got, want)
	}
}

// FuzzKnown: a known value written into any text between separators is
// found there, whole, whatever its case.
func FuzzKnown(f *testing.F) {
	f.Add("Jane Doe", "hello ", " bye")
	f.Add("O'Brien-Smith", "(", ")")
	f.Add("ACC-0042", "no. ", ".")
	f.Add("Ærø Straße", "", "")
	f.Fuzz(func(t *testing.T, value, before, after string) {
		norm, ok := Normalize(value)
		if !ok {
			return
		}
		k := newSetKnown(t, map[string]string{value: "known"})
		upper := strings.ToUpper(value)
		text := before + " " + upper + " " + after
		at := len(before) + 1
		for _, e := range Find(text, Options{Known: k, Types: []string{"known"}}) {
			if e.Start < at+len(upper)+1 && at-1 < e.End { // covers the mention
				got, _ := Normalize(text[e.Start:e.End])
				if got == norm {
					return
				}
			}
		}
		if n, _ := Normalize(upper); n != norm {
			return // upper-casing changed the value (ß -> SS): not the same value
		}
		t.Fatalf("value %q (normalized %q) not found in %q", value, norm, text)
	})
}
