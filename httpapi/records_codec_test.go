package httpapi

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/agentvault/agentvault/vault"
)

// byEncodingJSON is a create's body as the handler's encoding/json path
// reads it, records as maps (as parsedByHand has them).
func byEncodingJSON(b []byte) ([]map[string]json.RawMessage, bool) {
	req, ok := byDecodeFrom[struct {
		Records []recordInput `json:"records"`
	}](b)
	if !ok {
		return nil, false
	}
	out := make([]map[string]json.RawMessage, len(req.Records))
	for i, r := range req.Records {
		out[i] = asMap(vault.NewRecordOf(r.Fields))
	}
	return out, true
}

// parsedByHand is parseCreateBody's result as maps; it fails the test if
// a record names a field twice.
func parsedByHand(t testing.TB, b []byte) ([]map[string]json.RawMessage, bool) {
	recs, fast := parseCreateBody(b)
	if !fast {
		return nil, false
	}
	out := make([]map[string]json.RawMessage, len(recs))
	for i, r := range recs {
		if out[i] = asMap(r); len(out[i]) != len(r) {
			t.Fatalf("record %d names a field twice: %q", i, b)
		}
	}
	return out, true
}

func fv(name string, v json.RawMessage) vault.FieldValue {
	return vault.FieldValue{Name: name, Value: v}
}

func asMap(r vault.NewRecord) map[string]json.RawMessage {
	m := make(map[string]json.RawMessage, len(r))
	for _, f := range r {
		m[f.Name] = f.Value
	}
	return m
}

// TestCreateBodyShapes: the hand-written reader takes the plain shape
// and declines the rest, which encoding/json then reads or refuses.
func TestCreateBodyShapes(t *testing.T) {
	for _, c := range []struct {
		body string
		fast bool
	}{
		{`{"records":[{"fields":{"name":"Ann","salary":50000,"card":"4111111111111111"}}]}`, true},
		{" \n{ \"records\" : [ { \"fields\" : { \"a\" : [1, 2.5e-3, {\"x\": null}], \"b\": true } } , {\"fields\":{}} ] } \t", true},
		{`{"records":[]}`, true},
		{`{"records":[{"fields":{"note":"é \u00e9 \"quoted\" \\ <b>"}}]}`, true},
		{`{"records":[{"fields":{"a":-0.0E+1}}]}`, true},
		{`{"Records":[{"fields":{"a":1}}]}`, false},               // case-folded key: encoding/json's rule
		{`{"records":[{"fields":{"a":1,"a":2}}]}`, false},         // a repeated name
		{`{"records":[{"fields":{"caf\u00e9":1}}]}`, false},       // an escaped name
		{`{"records":[{"fields":{"a":1}}],"extra":1}`, false},     // unknown field
		{`{"records":[{"fields":{"a":1}}]} {}`, false},            // trailing data
		{`{"records":[{"fields":{"a":01}}]}`, false},              // bad number
		{`{"records":[{"fields":{"a":"tab	in string"}}]}`, false}, // control character
		{`{"records":null}`, false},
		{`{"records":[{"fields":null}]}`, false},
		{`{"records":[{"fields":{"a":1}},]}`, false},
		{``, false},
	} {
		byHand := func(b []byte) ([]map[string]json.RawMessage, bool) { return parsedByHand(t, b) }
		if fast := sameAsDecodeFrom(t, []byte(c.body), byHand, byEncodingJSON); fast != c.fast {
			t.Errorf("%s: fast %v, want %v", c.body, fast, c.fast)
		}
	}
}

// FuzzCreateBody: whatever the hand-written reader takes, encoding/json
// takes too, with the same result.
func FuzzCreateBody(f *testing.F) {
	f.Add([]byte(`{"records":[{"fields":{"name":"Ann","salary":50000}}]}`))
	f.Add([]byte(`{"records":[{"fields":{"a":[1,{"b":"\u2028\n"}],"c":null}},{"fields":{}}]}`))
	f.Add([]byte(`{"records":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		byHand := func(b []byte) ([]map[string]json.RawMessage, bool) { return parsedByHand(t, b) }
		sameAsDecodeFrom(t, b, byHand, byEncodingJSON)
	})
}

// writtenByEncodingJSON is what writeJSON writes for {"records": recs},
// each record as the other reads answer it.
func writtenByEncodingJSON(t testing.TB, created []vault.CreatedRecord) []byte {
	var recs []vault.Record
	if created != nil {
		recs = make([]vault.Record, len(created))
		for i := range created {
			recs[i] = created[i].Record()
		}
	}
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(struct {
		Records []vault.Record `json:"records"`
	}{recs}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestRecordsAnswer: the hand-written answer is encoding/json's byte for
// byte: names sorted, escapes, raw values compacted and HTML-escaped,
// records without fields, times in and out of UTC and shared or not.
func TestRecordsAnswer(t *testing.T) {
	at := time.Date(2026, 11, 26, 6, 30, 0, 123456789, time.UTC)
	for _, recs := range [][]vault.CreatedRecord{
		nil,
		{},
		{{ID: "0193e0c4-7b1a-7c3e-9a1b-2f3c4d5e6f70", Fields: []vault.FieldValue{fv("ssn", json.RawMessage(`"tok_abc"`)), fv("name", json.RawMessage(`"Ann"`)), fv("n", json.RawMessage(`5e3`))}, CreatedAt: at}},
		{{ID: "a", Fields: []vault.FieldValue{fv("x y", json.RawMessage(` { "a" : [ 1 , 2 ] } `)), fv("<b>&", json.RawMessage(`"<script>&amp;"`)), fv("é", json.RawMessage("\"\u2028 line\""))}, CreatedAt: at.In(time.FixedZone("x", -5*3600))}},
		{{ID: "quote\"id", Fields: nil, CreatedAt: time.Time{}}, {ID: "", Fields: []vault.FieldValue{}, CreatedAt: at}},
		{{ID: "1", Fields: []vault.FieldValue{fv("a", json.RawMessage(`1`)), fv("b", json.RawMessage(`2`))}, CreatedAt: at}, {ID: "2", Fields: []vault.FieldValue{fv("b", json.RawMessage(`3`)), fv("a", json.RawMessage(`4`))}, CreatedAt: at},
			{ID: "3", Fields: []vault.FieldValue{fv("a", json.RawMessage(`5`))}, CreatedAt: at.In(time.FixedZone("y", 3600))}, {ID: "4", Fields: []vault.FieldValue{fv("a", json.RawMessage(`6`))}, CreatedAt: at.Add(time.Second)}},
	} {
		got := appendCreatedAnswer(nil, recs)
		if want := writtenByEncodingJSON(t, recs); !bytes.Equal(got, want) {
			t.Errorf("by hand %s\nencoding/json %s", got, want)
		}
	}
}

// FuzzRecordsAnswer: any names, ids and JSON values are written as
// encoding/json writes them.
func FuzzRecordsAnswer(f *testing.F) {
	f.Add("id-1", "name", []byte(`"Ann"`), "ssn", []byte(` {"a": [1, "<&>"]} `), int64(1795664209237719922))
	f.Add("\xff", "\u2028", []byte("\"\u2029\""), "", []byte(`null`), int64(-1))
	f.Fuzz(func(t *testing.T, id, k1 string, v1 []byte, k2 string, v2 []byte, nanos int64) {
		if !json.Valid(v1) || !json.Valid(v2) || k1 == k2 { // a create never answers a name twice
			return
		}
		at := time.Unix(0, nanos).UTC()
		recs := []vault.CreatedRecord{{ID: id, Fields: []vault.FieldValue{fv(k1, v1), fv(k2, v2)}, CreatedAt: at}, {ID: id, Fields: []vault.FieldValue{fv(k2, v2)}, CreatedAt: at}}
		if got, want := appendCreatedAnswer(nil, recs), writtenByEncodingJSON(t, recs); !bytes.Equal(got, want) {
			t.Fatalf("by hand %s\nencoding/json %s", got, want)
		}
	})
}

// BenchmarkCreateBody reads a 1,000-record batch and writes its answer,
// by hand and by encoding/json, in the same run.
func BenchmarkCreateBody(b *testing.B) {
	var body bytes.Buffer
	body.WriteString(`{"records":[`)
	recs := make([]vault.CreatedRecord, 1000)
	now := time.Now().UTC()
	for i := range 1000 {
		if i > 0 {
			body.WriteByte(',')
		}
		body.WriteString(`{"fields":{"ref":"r0","secret":"0123456789abcdef"}}`)
		recs[i] = vault.CreatedRecord{ID: "0193e0c4-7b1a-7c3e-9a1b-2f3c4d5e6f70", Fields: []vault.FieldValue{fv("ref", json.RawMessage(`"r0"`)), fv("secret", json.RawMessage(`"tok_0123456789abcdef"`))}, CreatedAt: now}
	}
	body.WriteString(`]}`)
	b.Run("by-hand", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := parseCreateBody(body.Bytes()); !ok {
				b.Fatal("declined")
			}
			appendCreatedAnswer(nil, recs)
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := byEncodingJSON(body.Bytes()); !ok {
				b.Fatal("refused")
			}
			writtenByEncodingJSON(b, recs)
		}
	})
}
