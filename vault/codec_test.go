package vault

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/agentvault/agentvault/tokenizer"
)

func TestRecordCodecRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []storedRecord{
		{Created: time.Unix(0, 1).UTC(), Fields: []storedField{}},
		{Created: time.Date(2026, 11, 24, 10, 0, 0, 123, time.UTC), Fields: []storedField{
			{Name: "name", Value: []byte(`"Jane"`)},
			{Name: "salary", Token: "dtk_AAAA"},
			{Name: "note", Token: "tok_X"},
		}},
	}
	for _, r := range tests {
		got, err := decodeRecord(encodeRecord(&r))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, r) {
			t.Fatalf("round trip: got %+v, want %+v", got, r)
		}
	}
	for _, bad := range [][]byte{nil, {}, {2}, {1}, {1, 0}, {1, 0, 1}, {1, 0, 1, 1, 'a', 7}, {1, 0, 1, 1, 'a', 0, 9, 'x'}} {
		if _, err := decodeRecord(bad); err == nil {
			t.Errorf("decodeRecord(%v) accepted corrupt input", bad)
		}
	}
	valid := encodeRecord(&tests[1])
	if _, err := decodeRecord(append(valid, 0)); err == nil {
		t.Error("decodeRecord accepted trailing bytes")
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add(encodeRecord(&storedRecord{Created: time.Unix(5, 0), Fields: []storedField{{Name: "a", Value: []byte("1")}, {Name: "b", Token: "t"}}}))
	f.Add([]byte{1, 0, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRecord(b)
		if err != nil {
			return
		}
		// Whatever decodes re-encodes to a record that decodes the same.
		again, err := decodeRecord(encodeRecord(&r))
		if err != nil || !reflect.DeepEqual(again, r) {
			t.Fatalf("re-decode differs: %+v vs %+v (%v)", again, r, err)
		}
		if len(r.Fields) > MaxFields {
			t.Fatal("more fields than a schema allows")
		}
		_ = bytes.Clone(b)
	})
}

func FuzzDecodePointRef(f *testing.F) {
	f.Add(tokenIndexValue("tok_A", "people", "01a2", "note", []byte{1, 2, 3}))
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		ref, err := decodePointRef(b)
		if err != nil {
			return
		}
		again, err := decodePointRef(tokenIndexValue("tok_A", ref.Collection, ref.RecordID, ref.Field, ref.cipher))
		if err != nil || again.Collection != ref.Collection || again.RecordID != ref.RecordID || again.Field != ref.Field || !bytes.Equal(again.cipher, ref.cipher) {
			t.Fatalf("round trip differs: %+v vs %+v", again, ref)
		}
	})
}

// FuzzEntryJSON feeds arbitrary stored bytes to the audit entry decoder
// (it must fail cleanly, never panic or allocate without bound) and checks

// FuzzParseValue holds parseValue's fast path for plain strings equal to
// the general one (decode, then re-encode with json.Marshal): same result
// bytes, same acceptance, for fields with and without a format.
func FuzzParseValue(f *testing.F) {
	for _, s := range []string{`"plain"`, `"123-45-6789"`, `"a\u00e9"`, `"<b>&"`, `"\""`, `" x "`, `"\ud800"`, "\"\xff\"", `"`, `""`, ` "pad" `, `12`} {
		f.Add([]byte(s))
	}
	fields := []*Field{{Name: "s", Type: TypeString}, {Name: "ssn", Type: TypeString, Format: tokenizer.FormatSSN}}
	f.Fuzz(func(t *testing.T, raw []byte) {
		for _, fd := range fields {
			got, err := parseValue(fd, raw)
			want, wantErr := slowParseString(fd, raw)
			if (err == nil) != (wantErr == nil) {
				t.Fatalf("%s %q: err %v, general path err %v", fd.Name, raw, err, wantErr)
			}
			if err == nil && !bytes.Equal(got, want) {
				t.Fatalf("%s %q: %q, general path %q", fd.Name, raw, got, want)
			}
		}
	})
}

// slowParseString is parseValue for strings without the fast path.
func slowParseString(f *Field, raw []byte) (json.RawMessage, error) {
	raw = bytes.TrimSpace(raw)
	var s string
	if len(raw) == 0 || len(raw) > MaxValueBytes || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return nil, errors.New("not a string")
	}
	if f.Format != "" && tokenizer.CheckValue(f.Format, s) != nil {
		return nil, errors.New("bad format")
	}
	return json.Marshal(s)
}
