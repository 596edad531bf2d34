package detect

import (
	"bufio"
	"encoding/json"
	"github.com/nyaruka/phonenumbers"
	"os"
	"slices"
	"strings"
	"testing"
)

type labelled struct {
	Text     string   `json:"text"`
	Entities []Entity `json:"entities"`
}

// floors are the precision and recall each type must reach on the corpus.
var floors = map[string]float64{
	CreditCard: 0.98, IBAN: 0.98, USSSN: 0.98, Email: 0.98, Phone: 0.95,
	IPAddress: 0.95, Secret: 0.95, DateOfBirth: 0.95,
}

// TestCorpus measures precision and recall per entity type on the
// labelled corpus (testdata/corpus.jsonl, made by internal/corpusgen): an
// entity counts as found only with its exact type and offsets.
func TestCorpus(t *testing.T) {
	f, err := os.Open("testdata/corpus.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tp, fp, fn := map[string]int{}, map[string]int{}, map[string]int{}
	total := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var s labelled
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			t.Fatal(err)
		}
		total += len(s.Entities)
		got := Find(s.Text, Options{})
		for _, g := range got {
			if slices.Contains(s.Entities, g) {
				tp[g.Type]++
			} else {
				fp[g.Type]++
				t.Logf("false %s %q in %q", g.Type, s.Text[g.Start:g.End], s.Text)
			}
		}
		for _, w := range s.Entities {
			if !slices.Contains(got, w) {
				fn[w.Type]++
				t.Logf("missed %s %q in %q", w.Type, s.Text[w.Start:w.End], s.Text)
			}
		}
	}
	if total < 500 {
		t.Fatalf("the corpus labels %d entities; it needs at least 500", total)
	}
	for _, typ := range Types {
		p := ratio(tp[typ], tp[typ]+fp[typ])
		r := ratio(tp[typ], tp[typ]+fn[typ])
		t.Logf("%-14s precision %.3f recall %.3f (%d found, %d false, %d missed)", typ, p, r, tp[typ], fp[typ], fn[typ])
		if p < floors[typ] || r < floors[typ] {
			t.Errorf("%s below its floor %.2f: precision %.3f, recall %.3f", typ, floors[typ], p, r)
		}
	}
}

func ratio(a, b int) float64 {
	if b == 0 {
		return 1
	}
	return float64(a) / float64(b)
}

func TestTypesFilter(t *testing.T) {
	text := "mail jane@example.com card 4111 1111 1111 1111"
	got := Find(text, Options{Types: []string{CreditCard}})
	if len(got) != 1 || got[0].Type != CreditCard || text[got[0].Start:got[0].End] != "4111 1111 1111 1111" {
		t.Fatalf("%+v", got)
	}
}

func FuzzFind(f *testing.F) {
	f.Add("jane@example.com 4111111111111111 DE89 3704 0044 0532 0130 00 123-45-6789 ::1 +1 415 555 2671")
	f.Add("-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----")
	f.Add("ab12 3456 7890 1234 5678 x4111 1111 1111 1111é 123-45-6789b")
	f.Add("Bearer abcdefghijklmnopqrstuvwxyz0123 AKIAABCDEFGHIJKLMNOP gh sk_live_abcdefghijklmnop1234")
	f.Add("Date of Birth: 12 March 1990; DOB 1990-01-02, geboren am 01.02.1990, NÉE LE 3/4/1980, fecha de nacimiento 1990-01-01")
	f.Add("authorization: BEARER         abcdefghijklmnopqrstuvwxyz0123456789==== bearer")
	f.Fuzz(func(t *testing.T, text string) {
		prev := -1
		got := Find(text, Options{})
		for _, e := range got {
			if e.Start < 0 || e.End > len(text) || e.Start >= e.End || e.Start < prev {
				t.Fatalf("bad entity %+v in %q", e, text)
			}
			prev = e.End
		}
		if full := find(text, Options{}, false); !slices.Equal(got, full) {
			t.Fatalf("runs found %v, the whole text %v, in %q", got, full, text)
		}
	})
}

// TestWindowsFindTheSame: running each pattern only on the runs of bytes
// it can match finds exactly what running it on the whole text finds, on
// every corpus text and on texts built to test the runs' edges.
func TestWindowsFindTheSame(t *testing.T) {
	texts := []string{
		"ab12 3456 7890 1234 5678 then 4111 1111 1111 1111, x4111111111111111",
		"call +1 (415) 555-2671 or 415.555.2671; ssn 123-45-6789b or a123-45-6789",
		"hosts 10.0.0.1, 256.1.1.1 and fe80::1%eth0, ::ffff:10.0.0.1, dead:beef::1",
		"é4111111111111111é DE89 3704 0044 0532 0130 00é jane.doe+tag@example.co.uk",
		"Born on 1980-02-01; DOB: 02/03/1981; NÉ LE 3 mar 1982; BIRTHDAY Jan 5th, 1990",
		"key AKIAABCDEFGHIJKLMNOP, ghp_" + strings.Repeat("a", 36) + " xoxb-1234567890-abc",
	}
	f, err := os.Open("testdata/corpus.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var s labelled
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			t.Fatal(err)
		}
		texts = append(texts, s.Text)
	}
	found := 0
	for _, text := range texts {
		got, full := find(text, Options{}, true), find(text, Options{}, false)
		if !slices.Equal(got, full) {
			t.Fatalf("runs found %v, the whole text %v, in %q", got, full, text)
		}
		found += len(got)
	}
	if found < 500 {
		t.Fatalf("only %d values found in %d texts: the comparison proves little", found, len(texts))
	}
}

// TestPlausiblePhoneKeepsValid: the length pruning before the parse never
// drops a number the library accepts: every region's example numbers, in
// national and international format, from that region and from abroad.
func TestPlausiblePhoneKeepsValid(t *testing.T) {
	checked := 0
	for region := range phonenumbers.GetSupportedRegions() {
		for _, typ := range []phonenumbers.PhoneNumberType{phonenumbers.FIXED_LINE, phonenumbers.MOBILE, phonenumbers.TOLL_FREE} {
			n := phonenumbers.GetExampleNumberForType(region, typ)
			if n == nil || !phonenumbers.IsValidNumber(n) {
				continue
			}
			for _, f := range []phonenumbers.PhoneNumberFormat{phonenumbers.NATIONAL, phonenumbers.INTERNATIONAL, phonenumbers.E164} {
				s := phonenumbers.Format(n, f)
				for _, from := range []string{region, "US", "GB", "DE"} {
					p, err := phonenumbers.Parse(s, from)
					if err != nil || !phonenumbers.IsValidNumber(p) {
						continue
					}
					checked++
					if !plausiblePhone(s, digitsOf(s), from) {
						t.Errorf("%s (%s) read in %s: valid, pruned", s, region, from)
					}
				}
			}
		}
	}
	if checked < 500 {
		t.Fatalf("only %d numbers checked", checked)
	}
	t.Logf("%d valid numbers kept", checked)
}
