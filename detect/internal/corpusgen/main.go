// Command corpusgen writes detect/testdata/corpus.jsonl: synthetic texts
// (chat messages, tickets, emails, log lines, code, other languages) with
// every sensitive value labelled by type and byte offsets, and hard
// negatives (order numbers, version strings, card-like numbers that fail
// Luhn, SSN-like numbers in never-issued ranges, IBANs with bad check
// digits). It is deterministic: go run ./detect/internal/corpusgen.
package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"

	"github.com/nyaruka/phonenumbers"
)

type entity struct {
	Type  string `json:"type"`
	Start int    `json:"start"`
	End   int    `json:"end"`
}

type sample struct {
	Text     string   `json:"text"`
	Entities []entity `json:"entities"`
}

var r = rand.New(rand.NewPCG(2026, 11))

// builder writes text, labelling the values it is told are sensitive.
type builder struct {
	b    strings.Builder
	ents []entity
}

func (b *builder) s(text string) *builder { b.b.WriteString(text); return b }
func (b *builder) v(typ, value string) *builder {
	start := b.b.Len()
	b.b.WriteString(value)
	b.ents = append(b.ents, entity{typ, start, b.b.Len()})
	return b
}

func title(s string) string { return strings.ToUpper(s[:1]) + s[1:] }

func pick[T any](xs ...T) T { return xs[r.IntN(len(xs))] }

func digits(n int) string {
	var b strings.Builder
	for range n {
		b.WriteByte(byte('0' + r.IntN(10)))
	}
	return b.String()
}

func luhnComplete(prefix string, n int) string {
	body := prefix + digits(n-len(prefix)-1)
	for c := 0; c < 10; c++ {
		d := body + string(rune('0'+c))
		if luhn(d) {
			return d
		}
	}
	panic("unreachable")
}

func luhn(d string) bool {
	sum, double := 0, false
	for i := len(d) - 1; i >= 0; i-- {
		x := int(d[i] - '0')
		if double {
			if x *= 2; x > 9 {
				x -= 9
			}
		}
		sum += x
		double = !double
	}
	return sum%10 == 0
}

func groupCard(d string) string {
	switch pick(0, 1, 2) {
	case 1:
		var g []string
		for i := 0; i < len(d); i += 4 {
			g = append(g, d[i:min(i+4, len(d))])
		}
		return strings.Join(g, " ")
	case 2:
		var g []string
		for i := 0; i < len(d); i += 4 {
			g = append(g, d[i:min(i+4, len(d))])
		}
		return strings.Join(g, "-")
	}
	return d
}

func card() string {
	switch pick(0, 1, 2, 3) {
	case 0:
		return groupCard(luhnComplete("4", 16))
	case 1:
		return groupCard(luhnComplete(pick("51", "53", "55", "2223"), 16))
	case 2:
		d := luhnComplete(pick("34", "37"), 15)
		return pick(d, d[:4]+" "+d[4:10]+" "+d[10:])
	}
	return groupCard(luhnComplete("6011", 16))
}

func badCard() string {
	d := luhnComplete("4", 16)
	last := (int(d[15]-'0') + 1 + r.IntN(8)) % 10
	return groupCard(d[:15] + string(rune('0'+last)))
}

func mod97(s string) int {
	m := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' {
			m = (m*100 + int(c-'A'+10)) % 97
		} else {
			m = (m*10 + int(c-'0')) % 97
		}
	}
	return m
}

func iban(valid bool) string {
	cc, n := pick([]any{"DE", 22}, []any{"GB", 22}, []any{"FR", 27}, []any{"NL", 18}, []any{"ES", 24}, []any{"IT", 27})[0].(string), 0
	switch cc {
	case "DE", "GB":
		n = 22
	case "FR", "IT":
		n = 27
	case "NL":
		n = 18
	case "ES":
		n = 24
	}
	bban := digits(n - 4)
	if cc == "GB" || cc == "NL" {
		bban = strings.ToUpper(pick("NWBK", "BARC", "ABNA", "RABO")) + digits(n-8)
	}
	check := 98 - mod97(bban+cc+"00")
	if !valid {
		check = (check + 1 + r.IntN(90)) % 97
		if check < 2 {
			check += 2
		}
	}
	s := fmt.Sprintf("%s%02d%s", cc, check, bban)
	if pick(true, false) {
		var g []string
		for i := 0; i < len(s); i += 4 {
			g = append(g, s[i:min(i+4, len(s))])
		}
		return strings.Join(g, " ")
	}
	return s
}

func ssn(valid bool) string {
	if !valid {
		return pick("000", "666", "9"+digits(2)) + "-" + digits(2) + "-" + digits(4)
	}
	area := 1 + r.IntN(898)
	if area == 666 {
		area = 667
	}
	return fmt.Sprintf("%03d-%02d-%04d", area, 1+r.IntN(99), 1+r.IntN(9999))
}

var firsts = []string{"jane", "omar", "li.wei", "maria", "sven", "aiko", "carlos", "fatima", "noah", "priya", "tom", "ines"}
var lasts = []string{"doe", "haddad", "zhang", "garcia", "berg", "tanaka", "silva", "khan", "smith", "patel", "muller", "costa"}

func email() string {
	return pick(firsts...) + pick(".", "_", "") + pick(lasts...) + pick("", fmt.Sprint(r.IntN(99))) + "@" + pick("example.com", "mail.example.org", "acme-corp.io", "uni.example.edu", "example.co.uk")
}

func phone() string {
	region := pick("US", "US", "GB", "DE", "FR", "IN", "BR", "JP")
	ex := phonenumbers.GetExampleNumberForType(region, phonenumbers.MOBILE)
	for range 50 {
		nat := fmt.Sprint(ex.GetNationalNumber())
		cand := nat[:len(nat)-4] + digits(4)
		n, err := phonenumbers.Parse(cand, region)
		if err != nil || !phonenumbers.IsValidNumber(n) {
			continue
		}
		if region == "US" && pick(true, false) {
			return phonenumbers.Format(n, phonenumbers.NATIONAL)
		}
		return phonenumbers.Format(n, phonenumbers.INTERNATIONAL)
	}
	return phonenumbers.Format(ex, phonenumbers.INTERNATIONAL)
}

func ipv4() string {
	return fmt.Sprintf("%d.%d.%d.%d", 1+r.IntN(222), r.IntN(256), r.IntN(256), 1+r.IntN(254))
}

func ipv6() string {
	return fmt.Sprintf("2001:db8:%x:%x::%x", r.IntN(65536), r.IntN(65536), 1+r.IntN(65535))
}

func secret() string {
	up := "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
	alnum := "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	gen := func(set string, n int) string {
		var b strings.Builder
		for range n {
			b.WriteByte(set[r.IntN(len(set))])
		}
		return b.String()
	}
	switch pick(0, 1, 2, 3) {
	case 0:
		return "AKIA" + gen(up[:26]+"0123456789", 16)
	case 1:
		return "ghp_" + gen(alnum, 36)
	case 2:
		return "sk_live_" + gen(alnum, 24)
	}
	return "AIza" + gen(alnum+"_-", 35)
}

func dob() (string, string) {
	y, m, d := 1940+r.IntN(65), 1+r.IntN(12), 1+r.IntN(28)
	months := []string{"January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"}
	switch pick(0, 1, 2, 3) {
	case 0:
		return pick("born on ", "DOB: ", "Date of birth: "), fmt.Sprintf("%04d-%02d-%02d", y, m, d)
	case 1:
		return pick("DOB ", "date of birth ", "birthday: "), fmt.Sprintf("%02d/%02d/%04d", m, d, y)
	case 2:
		return pick("born ", "Birthday: "), fmt.Sprintf("%d %s %d", d, months[m-1], y)
	}
	return pick("geboren am ", "né le "), fmt.Sprintf("%02d.%02d.%04d", d, m, y)
}

func main() {
	var out []sample
	add := func(b *builder) { out = append(out, sample{b.b.String(), append([]entity{}, b.ents...)}) }
	for i := 0; i < 300; i++ {
		b := &builder{}
		switch i % 11 {
		case 0:
			b.s("Hi, this is ").s(title(pick(firsts...))).s(". Please send the invoice to ").v("EMAIL", email()).s(" or call me on ").v("PHONE", phone()).s(". Thanks!")
		case 1:
			b.s("Ticket #").s(digits(7)).s(": customer paid with card ").v("CREDIT_CARD", card()).s(" but order ").s(digits(12)).s(" shows unpaid. Refund to IBAN ").v("IBAN", iban(true)).s(".")
		case 2:
			b.s("Employee record: SSN ").v("US_SSN", ssn(true)).s(", ").s(func() string { p, v := dob(); b.s(p); b.v("DATE_OF_BIRTH", v); return "" }()).s(", dept ").s(pick("eng", "ops", "hr")).s(".")
		case 3:
			b.s(fmt.Sprintf("2026-11-25T10:%02d:%02dZ INFO request from ", r.IntN(60), r.IntN(60))).v("IP_ADDRESS", ipv4()).s(" user=").v("EMAIL", email()).s(" status=200 latency_ms=").s(digits(2)).s(" build=v").s(fmt.Sprintf("%d.%d.%d", r.IntN(9), r.IntN(20), r.IntN(30)))
		case 4:
			b.s("export AWS_ACCESS_KEY_ID=").v("SECRET", secret()).s("\nexport REGION=eu-west-1\n# rotate before ").s(fmt.Sprintf("%d.%d.%d", 2026, 12, 1))
		case 5:
			b.s("Sehr geehrte Frau ").s(title(pick(lasts...))).s(", Ihre Rückerstattung geht an ").v("IBAN", iban(true)).s(". Rückfragen unter ").v("PHONE", phone()).s(" oder ").v("EMAIL", email()).s(".")
		case 6:
			b.s("Hard negatives: order ").s(digits(16)).s(", tracking ").s(badCard()).s(", ref ").s(ssn(false)).s(", account ").s(iban(false)).s(", version ").s(fmt.Sprintf("%d.%d.%d", r.IntN(5), r.IntN(20), r.IntN(99))).s(", sha ").s(fmt.Sprintf("%x", r.Uint64())).s(".")
		case 7:
			b.s("Server ").v("IP_ADDRESS", ipv6()).s(" rejected the token; card on file ").v("CREDIT_CARD", card()).s(", expiry 0").s(fmt.Sprint(1 + r.IntN(9))).s("/2").s(fmt.Sprint(7 + r.IntN(3))).s(".")
		case 8:
			b.s("Le client ").s(title(pick(firsts...))).s(" (").v("EMAIL", email()).s(") appelle depuis le ").v("PHONE", phone()).s(" au sujet de la carte ").v("CREDIT_CARD", card()).s(".")
		case 9:
			b.s("Meeting moved to ").s(fmt.Sprintf("%02d/%02d/%04d", 1+r.IntN(12), 1+r.IntN(28), 2026)).s(", room ").s(digits(3)).s("; dial-in ").v("PHONE", phone()).s(", PIN ").s(digits(6)).s(". Quote ").s(digits(9)).s(".")
		case 10:
			b.s("curl -H 'Authorization: Bearer ").v("SECRET", secret()).s("' https://api.example.com/v1/users/").s(digits(5)).s(" # from ").v("IP_ADDRESS", ipv4())
		}
		add(b)
	}
	f, err := os.Create("detect/testdata/corpus.jsonl")
	if err != nil {
		panic(err)
	}
	defer f.Close()
	enc := json.NewEncoder(f)
	enc.SetEscapeHTML(false)
	n := 0
	for _, s := range out {
		n += len(s.Entities)
		enc.Encode(s)
	}
	fmt.Fprintf(os.Stderr, "%d samples, %d entities\n", len(out), n)
}
