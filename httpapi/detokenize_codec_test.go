package httpapi

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/agentvault/agentvault/vault"
)

// TestDetokenizeBodyShapes: the plain shape is read by hand, the rest
// declined.
func TestDetokenizeBodyShapes(t *testing.T) {
	for _, c := range []struct {
		body string
		fast bool
	}{
		{`{"tokens":["tok_ABC","4111 1111 1111 1234"],"purpose":"support case 1"}`, true},
		{` {"purpose":"p", "approval_id":"0193e0c4-7b1a-7c3e-9a1b-2f3c4d5e6f70" ,"tokens":[ ]} `, true},
		{`{"tokens":["a"]}`, true},
		{`{"Tokens":["a"]}`, false},
		{`{"tokens":["a"],"tokens":["b"]}`, false},
		{`{"tokens":["caf\u00e9"]}`, false},
		{`{"tokens":["a"],"purpose":"é"}`, false},
		{`{"tokens":null}`, false},
		{`{"tokens":["a"],"x":1}`, false},
		{`{}`, false},
		{`{"tokens":["a"]}x`, false},
	} {
		if fast := sameAsDecodeFrom(t, []byte(c.body), parseDetokenizeBody, byDecodeFrom[vault.DetokenizeRequest]); fast != c.fast {
			t.Errorf("%s: fast %v, want %v", c.body, fast, c.fast)
		}
	}
}

// FuzzDetokenizeBody: whatever the hand-written reader takes,
// encoding/json takes too, with the same result.
func FuzzDetokenizeBody(f *testing.F) {
	f.Add([]byte(`{"tokens":["tok_ABC","dtk_X"],"purpose":"p","approval_id":"a"}`))
	f.Add([]byte(`{"purpose":"","tokens":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		sameAsDecodeFrom(t, b, parseDetokenizeBody, byDecodeFrom[vault.DetokenizeRequest])
	})
}

func detokenizeAnswerByEncodingJSON(t testing.TB, res []vault.DetokenizeResult) []byte {
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(struct {
		Results []vault.DetokenizeResult `json:"results"`
	}{res}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestDetokenizeAnswer: byte for byte encoding/json's, omitted fields
// and escapes included.
func TestDetokenizeAnswer(t *testing.T) {
	for _, res := range [][]vault.DetokenizeResult{
		nil,
		{},
		{{Token: "tok_ABC", Status: "ok", Value: json.RawMessage(`"Ann <Lee> & co"`)}, {Token: "4111 1111", Status: "denied", Reason: "no grant"},
			{Token: "t\"q", Status: "pending_approval", ApprovalID: "0193e0c4-7b1a-7c3e-9a1b-2f3c4d5e6f70"}, {Token: "x", Status: "ok", Value: json.RawMessage(` { "a" : 1 } `)}},
	} {
		if got, want := appendDetokenizeAnswer(nil, res), detokenizeAnswerByEncodingJSON(t, res); !bytes.Equal(got, want) {
			t.Errorf("by hand %s\nencoding/json %s", got, want)
		}
	}
}

// FuzzDetokenizeAnswer: any tokens, reasons and JSON values.
func FuzzDetokenizeAnswer(f *testing.F) {
	f.Add("tok_ABC", "ok", []byte(`"v"`), "", "")
	f.Add("\xff\u2028", "denied", []byte(``), "<reason>", "id")
	f.Fuzz(func(t *testing.T, tok, status string, value []byte, reason, approval string) {
		if len(value) > 0 && !json.Valid(value) {
			return
		}
		res := []vault.DetokenizeResult{{Token: tok, Status: status, Value: value, Reason: reason, ApprovalID: approval}}
		if got, want := appendDetokenizeAnswer(nil, res), detokenizeAnswerByEncodingJSON(t, res); !bytes.Equal(got, want) {
			t.Fatalf("by hand %s\nencoding/json %s", got, want)
		}
	})
}
