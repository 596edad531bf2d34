package detect

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/nyaruka/phonenumbers"
)

// slowPhone is the library's own reading, the reference readPhone must
// agree with.
func slowPhone(s, region string) (*phonenumbers.PhoneNumber, bool) {
	n, err := phonenumbers.Parse(s, region)
	return n, err == nil
}

// agree checks readPhone against Parse on one candidate: where the
// shortcut reads a number, Parse reads the same one, or (when Parse
// refuses the input) the shortcut's is not valid either.
func agree(t testing.TB, s, region string) bool {
	fast, ok := readPhone(s, digitsOf(s), region)
	if !ok {
		return false
	}
	slow, ok := slowPhone(s, region)
	fastValid, slowValid := phonenumbers.IsValidNumber(fast), ok && phonenumbers.IsValidNumber(slow)
	same := ok && slow.GetCountryCode() == fast.GetCountryCode() && slow.GetNationalNumber() == fast.GetNationalNumber() &&
		slow.GetItalianLeadingZero() == fast.GetItalianLeadingZero() && slow.GetNumberOfLeadingZeros() == fast.GetNumberOfLeadingZeros()
	if fastValid != slowValid || fastValid && !same {
		t.Fatalf("%q in %s: shortcut read +%d %d (valid %v), Parse +%d %d (ok %v, valid %v)", s, region,
			fast.GetCountryCode(), fast.GetNationalNumber(), fastValid, slow.GetCountryCode(), slow.GetNationalNumber(), ok, slowValid)
	}
	return true
}

// TestFastPhoneAgrees: every region's example numbers in every format,
// read from home and from abroad, and random digit strings shaped like
// candidates: wherever the shortcut reads a number, Parse reads the same
// number with the same validity.
func TestFastPhoneAgrees(t *testing.T) {
	regions := []string{"US", "GB", "DE", "FR", "IN", "BR", "JP", "AU", "CH", "IT", "MX", "AR", "CA", "NL"}
	read, total := 0, 0
	for region := range phonenumbers.GetSupportedRegions() {
		for _, typ := range []phonenumbers.PhoneNumberType{phonenumbers.FIXED_LINE, phonenumbers.MOBILE, phonenumbers.TOLL_FREE, phonenumbers.VOIP} {
			n := phonenumbers.GetExampleNumberForType(region, typ)
			if n == nil {
				continue
			}
			for _, f := range []phonenumbers.PhoneNumberFormat{phonenumbers.NATIONAL, phonenumbers.INTERNATIONAL, phonenumbers.E164} {
				s := phonenumbers.Format(n, f)
				for _, from := range append([]string{region}, regions...) {
					total++
					if agree(t, s, from) {
						read++
					}
				}
			}
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200_000 {
		n := 7 + rng.IntN(9)
		s := fmt.Sprintf("%0*d", n, rng.Uint64()%pow10(n))
		if rng.IntN(3) == 0 {
			s = "+" + s
		}
		total++
		if agree(t, s, regions[rng.IntN(len(regions))]) {
			read++
		}
	}
	if read < total/3 {
		t.Fatalf("the shortcut read only %d of %d candidates", read, total)
	}
	t.Logf("the shortcut read %d of %d candidates, each as Parse does", read, total)
}

func pow10(n int) uint64 {
	p := uint64(1)
	for range n {
		p *= 10
	}
	return p
}

// FuzzFastPhone: any candidate the shortcut reads, Parse reads the same.
func FuzzFastPhone(f *testing.F) {
	f.Add("+44 20 7946 0958", "US")
	f.Add("(415) 555-2671", "US")
	f.Add("030 123456789", "DE")
	f.Add("1 800 555 0199", "CA")
	f.Fuzz(func(t *testing.T, s, region string) {
		if len(s) > 40 {
			return
		}
		for i := 0; i < len(s); i++ {
			if !isDigit(s[i]) && !(s[i] == '+' && i == 0) && s[i] != ' ' && s[i] != '-' && s[i] != '.' && s[i] != '(' && s[i] != ')' {
				return // candidates hold digits and these separators only
			}
		}
		agree(t, s, region)
	})
}
