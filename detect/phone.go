package detect

import (
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/nyaruka/phonenumbers"
)

// Phone numbers. A candidate is valid if the phone-number library says so
// (IsValidNumber: its national number matches one of its region's number
// types). Reading the candidate into a number is where the library spends
// most of its time (Parse runs regular expressions for extensions,
// punctuation and national prefixes on every input), so candidates are
// first pruned by length, and the common shapes are read here: a "+" and a
// calling code, or a national number with or without the region's plain
// national prefix. Anything else (an international prefix without "+", a
// leading zero, a region whose national prefix is a pattern) goes to Parse.
// TestFastPhoneAgrees holds the shortcut to exactly what Parse gives.

func validPhone(s string, o Options) bool {
	d := digitsOf(s)
	if len(d) < 7 || len(d) > 15 {
		return false
	}
	region := o.Region
	if region == "" {
		region = "US"
	}
	if !plausiblePhone(s, d, region) {
		return false
	}
	n, ok := readPhone(s, d, region)
	if !ok {
		var err error
		if n, err = phonenumbers.Parse(s, region); err != nil {
			return false
		}
	}
	return phonenumbers.IsValidNumber(n)
}

// phoneRegion is what reading numbers needs of a region's metadata.
type phoneRegion struct {
	code     int
	min, max int            // lengths of a national significant number
	lengths  []int32        // every such length, sorted
	local    []int32        // lengths of numbers dialled without an area code
	idd      *regexp.Regexp // the international dialling prefix, anchored
	general  *regexp.Regexp // every valid national number, anchored both ends
	prefix   string         // the national prefix, when it is a plain digit string
	simple   bool           // the national prefix is read as the plain prefix (or there is none)
	npp      *regexp.Regexp // how Parse finds a national prefix, anchored at the start; nil if none
}

var phoneMeta = sync.OnceValues(func() (map[string]*phoneRegion, map[int]*phoneRegion) {
	byRegion, byCode := map[string]*phoneRegion{}, map[int]*phoneRegion{}
	all, err := phonenumbers.MetadataCollection()
	if err != nil {
		return byRegion, byCode // no metadata: every candidate goes to Parse
	}
	for _, m := range all.GetMetadata() {
		gd := m.GetGeneralDesc()
		ls := gd.GetPossibleLength()
		if len(ls) == 0 {
			continue
		}
		r := &phoneRegion{code: int(m.GetCountryCode()), min: int(slices.Min(ls)), max: int(slices.Max(ls)), lengths: ls, local: gd.GetPossibleLengthLocalOnly()}
		if p := m.GetInternationalPrefix(); p != "" {
			r.idd, _ = regexp.Compile("^(?:" + p + ")")
		}
		if p := gd.GetNationalNumberPattern(); p != "" {
			r.general, _ = regexp.Compile("^(?:" + p + ")$")
		}
		np, npp := m.GetNationalPrefix(), m.GetNationalPrefixForParsing()
		r.prefix = np
		if npp == "" {
			npp = np
		}
		if npp != "" {
			r.npp, _ = regexp.Compile("^(?:" + npp + ")")
		}
		r.simple = m.GetNationalPrefixTransformRule() == "" && (npp == "" && np == "" || npp == np && isDigits(np))
		byRegion[m.GetId()] = r
		cc := r.code
		if c, ok := byCode[cc]; ok {
			u := *c
			u.min, u.max = min(c.min, r.min), max(c.max, r.max)
			byCode[cc] = &u
		} else {
			byCode[cc] = r
		}
	}
	return byRegion, byCode
})

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return s != ""
}

// plausiblePhone prunes, before any parse, a candidate whose digits no
// number could have: the metadata's lengths of a national significant
// number, allowing for a national prefix or carrier code (3 digits) before
// it. It never prunes what Parse and IsValidNumber accept
// (TestPlausiblePhoneKeepsValid): a valid number's national significant
// number has one of its region's lengths.
func plausiblePhone(s, d, region string) bool {
	byRegion, byCode := phoneMeta()
	if strings.HasPrefix(s, "+") {
		for l := 1; l <= 3 && l < len(d); l++ {
			cc, _ := strconv.Atoi(d[:l])
			if b, ok := byCode[cc]; ok { // calling codes are prefix-free
				n := len(d) - l
				return n >= b.min && n <= b.max+3
			}
		}
		return false
	}
	b, ok := byRegion[region]
	if !ok {
		return true
	}
	if len(d) >= b.min && len(d) <= b.max+3 {
		return true
	}
	return b.idd != nil && b.idd.MatchString(d) // dialled abroad without "+"
}

// readPhone reads a candidate (s, its digits d) as Parse would, in the
// shapes it handles; ok false for the others.
func readPhone(s, d, region string) (*phonenumbers.PhoneNumber, bool) {
	if d == "" {
		return nil, false
	}
	byRegion, byCode := phoneMeta()
	var cc int
	var national string
	if strings.HasPrefix(s, "+") {
		if d[0] == '0' {
			return nil, false // no calling code starts with 0
		}
		for l := 1; l <= 3 && l < len(d); l++ {
			c, _ := strconv.Atoi(d[:l])
			if _, ok := byCode[c]; ok {
				cc, national = c, d[l:]
				break
			}
		}
		main, ok := byRegion[phonenumbers.GetRegionCodeForCountryCode(cc)]
		// Parse may strip a national prefix after the calling code too
		// ("+44 (0)20 ..."): left to it.
		if !ok || main.npp != nil && main.npp.MatchString(national) {
			return nil, false
		}
	} else {
		r, ok := byRegion[region]
		if !ok || !r.simple || r.general == nil || r.idd != nil && r.idd.MatchString(d) {
			return nil, false
		}
		if strings.HasPrefix(d, strconv.Itoa(r.code)) {
			return nil, false // Parse may read the calling code written without "+"
		}
		cc, national = r.code, d
		if r.prefix != "" && strings.HasPrefix(d, r.prefix) {
			// Parse strips the prefix unless that makes a number its
			// region accepts into one it does not, and keeps the result
			// only if its length can be a number's.
			stripped := d[len(r.prefix):]
			if !(r.general.MatchString(d) && !r.general.MatchString(stripped)) && r.lengthKeeps(len(stripped)) {
				national = stripped
			}
		}
	}
	if cc == 0 || len(national) < 2 || len(national) > 17 {
		return nil, false
	}
	nn, err := strconv.ParseUint(national, 10, 64)
	if err != nil {
		return nil, false
	}
	c := int32(cc)
	n := &phonenumbers.PhoneNumber{CountryCode: &c, NationalNumber: &nn}
	if national[0] == '0' {
		// Leading zeros are part of some national numbers (Italy's):
		// Parse records them as a flag and a count.
		lz := true
		n.ItalianLeadingZero = &lz
		if zeros := len(national) - len(strings.TrimLeft(national[:len(national)-1], "0")) - 1; zeros > 1 {
			z := int32(zeros)
			n.NumberOfLeadingZeros = &z
		}
	}
	return n, true
}

// lengthKeeps is Parse's test of a national number's length after the
// national prefix is stripped: kept unless too short, local only or of a
// length between the region's that none has (too long is kept).
func (r *phoneRegion) lengthKeeps(n int) bool {
	if slices.Contains(r.local, int32(n)) {
		return false
	}
	switch {
	case n < r.min:
		return false
	case n > r.max:
		return true
	}
	return slices.Contains(r.lengths, int32(n))
}
