package vault

import (
	"context"
	"encoding/json"
	"math/big"
	"strconv"
	"strings"
	"testing"

	"github.com/agentvault/agentvault/tokenizer"
)

// TestNumbersAreExact is the review's reproduction: numbers that a float64
// rounds can neither share a token with their neighbour nor slip under an
// approval threshold.
func TestNumbersAreExact(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.mustCollection(Collection{Name: "pay", Fields: []Field{
		{Name: "amount", Type: TypeNumber, Sensitive: true, Token: tokenizer.KindDeterministic, ApprovalAbove: num(150000)},
	}})
	ctx := context.Background()
	store := func(lit string) (string, error) {
		recs, err := e.svc.CreateRecords(ctx, RequestMeta{}, "pay", []map[string]json.RawMessage{{"amount": json.RawMessage(lit)}})
		if err != nil {
			return "", err
		}
		return tokenOf(t, recs[0], "amount"), nil
	}
	for _, lit := range []string{"9007199254740993", "150000.00000000001", "1e-400", "123456789012345678", "0.30000000000000001"} {
		t.Run("refused "+lit, func(t *testing.T) {
			_, err := store(lit)
			wantErr(t, err, ErrInvalid, "invalid_value")
		})
	}
	same := [][]string{
		{"9007199254740992", "9007199254740992.0", "9.007199254740992e15"},
		{"100", "1e2", "100.000", "1E+2"},
		{"0", "-0", "0.0"},
		{"0.1", "1e-1"},
	}
	for _, group := range same {
		t.Run("one token for "+group[0], func(t *testing.T) {
			var first string
			for _, lit := range group {
				tok, err := store(lit)
				if err != nil {
					t.Fatalf("%s: %v", lit, err)
				}
				if first == "" {
					first = tok
				} else if tok != first {
					t.Fatalf("%s and %s are one number with two tokens", group[0], lit)
				}
			}
		})
	}
	a, _ := store("150000")
	b, _ := store("150001")
	if a == b {
		t.Fatal("two numbers share a token")
	}

	// A threshold is checked the same way when the schema is decoded.
	for _, tc := range []struct {
		threshold string
		ok        bool
	}{{"149999.99999999999", false}, {"1e400", false}, {"149999.99", true}, {"150000", true}} {
		var c Collection
		err := json.Unmarshal([]byte(`{"name":"t`+strconv.Itoa(len(tc.threshold))+`","fields":[{"name":"n","type":"number","sensitive":true,"approval_above":`+tc.threshold+`}]}`), &c)
		if err == nil {
			_, err = e.svc.CreateCollection(ctx, RequestMeta{}, c)
		}
		if (err == nil) != tc.ok {
			t.Errorf("approval_above %s: err = %v, want ok=%v", tc.threshold, err, tc.ok)
		}
	}
	var c Collection
	if err := json.Unmarshal([]byte(`{"name":"u","fields":[{"name":"n","type":"number","sensitive":true,"approval_above":1,"color":"red"}]}`), &c); err == nil {
		t.Error("a schema field with an unknown member decoded")
	}
}

// FuzzExactNumber holds exactNumber to math/big: a literal is exact when
// its rational value equals that of the float64 it parses to.
func FuzzExactNumber(f *testing.F) {
	for _, s := range []string{"0", "-0", "0.1", "1e2", "9007199254740993", "150000.00000000001", "1e-400", "5e-324", "1.7976931348623157e308", "00012.5000", "-1.5E-3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > 64 {
			return
		}
		var n json.Number
		if json.Unmarshal([]byte(s), &n) != nil || n.String() != s {
			return // not a JSON number literal
		}
		x, exact := exactNumber(s)
		want, ok := new(big.Rat).SetString(s)
		if !ok { // big.Rat refuses exponents it deems too large
			if exact && x != 0 {
				t.Fatalf("%q: reported exact, but big.Rat cannot read it", s)
			}
			return
		}
		fl, err := strconv.ParseFloat(s, 64)
		if err != nil {
			if exact {
				t.Fatalf("%q does not parse as a float64, yet reported exact", s)
			}
			return
		}
		got, _ := new(big.Rat).SetString(strconv.FormatFloat(fl, 'g', -1, 64))
		if exact != (want.Cmp(got) == 0) {
			t.Fatalf("%q: exact=%v, but big.Rat says %v vs %v", s, exact, want, got)
		}
		if exact && x != fl {
			t.Fatalf("%q: value %v, want %v", s, x, fl)
		}
	})
}

// TestEveryStoredTokenIsRevealable: a value whose token a client could not
// present again (too long, not ASCII) is refused when written, and one at
// the limit round-trips through detokenize.
func TestEveryStoredTokenIsRevealable(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.mustCollection(peopleSchema)
	ctx := context.Background()
	atLimit := "x@" + strings.Repeat("d", tokenizer.MaxEmailDomain-4) + ".com"
	for _, v := range []string{"x@bücher.de", "x@" + strings.Repeat("d", tokenizer.MaxEmailDomain-3) + ".com", "a b@example.com"} {
		_, err := e.svc.CreateRecords(ctx, RequestMeta{}, "people", []map[string]json.RawMessage{fields("email", v)})
		wantErr(t, err, ErrInvalid, "invalid_value")
	}
	agent := e.agentWithGrant(GrantRequest{Collection: "people", Fields: []string{"email"}, Purpose: "test"})
	for _, v := range []string{atLimit, "x@xn--bcher-kva.de"} {
		recs, err := e.svc.CreateRecords(ctx, RequestMeta{}, "people", []map[string]json.RawMessage{fields("email", v)})
		if err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		res, err := e.svc.Detokenize(ctx, RequestMeta{Actor: agent}, DetokenizeRequest{Tokens: []string{tokenOf(t, recs[0], "email")}, Purpose: "test"})
		if want, _ := json.Marshal(v); err != nil || res[0].Status != StatusOK || string(res[0].Value) != string(want) {
			t.Fatalf("reveal %s: %+v, %v", v, res, err)
		}
	}
}
