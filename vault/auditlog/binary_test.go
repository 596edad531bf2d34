package auditlog

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

// storedRoundTrip stores e as the writer does and checks what readers
// get back: Decode gives the sealed JSON byte for byte, DecodeEntry the
// entry. It returns the stored form.
func storedRoundTrip(t *testing.T, e Entry) []byte {
	t.Helper()
	want := e
	sealed := Seal(&want)
	stored := Stored(&e)
	if e.Hash != want.Hash {
		t.Fatalf("Stored set hash %s, Seal %s", e.Hash, want.Hash)
	}
	got, err := Decode(stored)
	if err != nil || !bytes.Equal(got, sealed) {
		t.Fatalf("Decode: %v\ngot  %s\nwant %s", err, got, sealed)
	}
	back, err := DecodeEntry(stored)
	if err != nil {
		t.Fatal(err)
	}
	var fromJSON Entry
	if err := json.Unmarshal(sealed, &fromJSON); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*back, fromJSON) {
		t.Fatalf("DecodeEntry:\ngot  %+v\nwant %+v", *back, fromJSON)
	}
	return stored
}

// TestBinaryEntries: entries the binary form carries come back byte for
// byte, in a fraction of the JSON's size; those it cannot carry exactly
// are stored as JSON and come back too.
func TestBinaryEntries(t *testing.T) {
	at := time.Date(2026, 11, 26, 3, 4, 5, 600700800, time.UTC)
	create := Entry{Seq: 41, Time: at, Actor: "d732fa27-ef27-4a80-9e41-7310e3420dae", Action: "records.create", Decision: DecisionOK,
		Collection: "load_1795664470611175082", Fields: []string{"ref", "secret"}, RecordIDs: []string{"01a215f1-625a-7c70-a4cd-9c7fae8aa77b"},
		RequestID: "d5a56be6-379e-4563-9357-c4741cc1c4e6", RemoteAddr: "127.0.0.1:40584", PrevHash: GenesisHash}
	reveal := create
	reveal.Action, reveal.Decision, reveal.Purpose, reveal.GrantID = "detokenize", DecisionAllowed, "support case 1234", "9f0c7a43-1111-4c3e-8000-25cd1e0c1a2b"
	reveal.Tokens = []TokenDecision{{TokenHash: strings.Repeat("ab", 32), Collection: "hr", Field: "ssn", RecordID: "01a215f1-625a-7c70-a4cd-9c7fae8aa77b",
		Decision: DecisionAllowed, GrantID: "9f0c7a43-1111-4c3e-8000-25cd1e0c1a2b"}}
	odd := create
	odd.Actor, odd.Reason, odd.Fields, odd.RecordIDs = "D732FA27-EF27-4A80-9E41-7310E3420DAE", "quote \" <&> é \xff \u2028", []string{}, nil
	odd.PrevHash = strings.ToUpper(GenesisHash)
	odd.Via, odd.Client, odd.Target = "mcp", "claude/1.0", "database"
	valid := odd
	valid.Reason = "quote \" <&> é \u2028 \t"
	for _, c := range []struct {
		name   string
		e      Entry
		binary bool
	}{
		{"create", create, true},
		{"reveal", reveal, true},
		{"upper-case ids, escapes, empty and nil lists", odd, false},
		{"upper-case ids, escapes, valid UTF-8", valid, true},
		{"empty", Entry{Time: time.Unix(0, 0).UTC()}, true},
		{"before 1970", Entry{Time: time.Date(1969, 12, 31, 23, 59, 59, 1, time.UTC)}, true},
		{"time not in UTC", Entry{Time: at.In(time.FixedZone("x", 3600))}, false},
		{"zone named UTC, not time.UTC", Entry{Time: at.In(time.FixedZone("UTC", 0))}, false},
		{"zero time", Entry{}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			stored := storedRoundTrip(t, c.e)
			if isBinary := stored[0] == binaryEntry; isBinary != c.binary {
				t.Fatalf("stored binary %v, want %v", isBinary, c.binary)
			}
		})
	}
	e := create
	json := Seal(&e)
	if bin := Stored(&e); len(bin)*2 > len(json) {
		t.Errorf("a create's entry: %d bytes binary, %d JSON", len(bin), len(json))
	} else {
		t.Logf("a create's entry: %d bytes binary, %d JSON", len(bin), len(json))
	}
}

// FuzzBinaryEntry: any entry comes back from its stored form as its
// sealed JSON, and any bytes behind the binary marker decode to an
// entry or an error, never a panic.
func FuzzBinaryEntry(f *testing.F) {
	f.Add(uint64(7), int64(1795664209237719922), "d732fa27-ef27-4a80-9e41-7310e3420dae", GenesisHash, "tok", "c\"f", true, []byte{binaryEntry, 1})
	f.Add(uint64(0), int64(-1), "", "\xff", "\u2028", "", false, []byte{})
	f.Fuzz(func(t *testing.T, seq uint64, nanos int64, a, b, c, d string, lists bool, raw []byte) {
		e := Entry{Seq: seq, Time: time.Unix(0, nanos).UTC(), Actor: a, Action: b, Decision: c, Collection: d, Purpose: a + b,
			GrantID: c, ApprovalID: d, RequestID: a, RemoteAddr: b, Target: c, Reason: d, Via: a, Client: b, PrevHash: c}
		if lists {
			e.Fields, e.RecordIDs = []string{a, b}, []string{}
			e.Tokens = []TokenDecision{{TokenHash: a, Collection: b, Field: c, RecordID: d, Decision: a, Reason: b, GrantID: c}}
		}
		stored := storedRoundTrip(t, e)
		if stored[0] == binaryEntry {
			// Any change to the binary form is caught by the check.
			for i := 1; i < len(stored); i += 7 {
				changed := bytes.Clone(stored[1:])
				changed[i-1] ^= 0x40
				if back, err := decodeBinary(changed); err == nil && matchesBinary(changed, &e) && !bytes.Equal(withHash(Canonical(back), back.Hash), Seal(&e)) {
					t.Fatalf("a changed byte %d passed the check", i)
				}
			}
		}
		in := append([]byte{binaryEntry}, raw...)
		if got, err := DecodeEntry(in); err == nil {
			if !matchesBinary(raw, got) {
				t.Fatalf("decodes to an entry it does not match: %+v", *got)
			}
			// What decodes is an entry whose JSON decodes the same.
			j, err := Decode(in)
			if err != nil {
				t.Fatalf("DecodeEntry took it, Decode did not: %v", err)
			}
			var again Entry
			if err := json.Unmarshal(j, &again); err != nil {
				t.Fatalf("rebuilt JSON does not parse: %v\n%s", err, j)
			}
			if !reflect.DeepEqual(again, *got) {
				t.Fatalf("entry and its JSON differ:\n%+v\n%+v", *got, again)
			}
		}
	})
}

// BenchmarkStored: a create's entry sealed and stored, binary (checked)
// and JSON, in the same run.
func BenchmarkStored(b *testing.B) {
	e := Entry{Seq: 4, Time: time.Now().UTC(), Actor: "d732fa27-ef27-4a80-9e41-7310e3420dae", Action: "records.create", Decision: DecisionOK,
		Collection: "load_1795664470611175082", Fields: []string{"ref", "secret"}, RecordIDs: []string{"01a215f1-625a-7c70-a4cd-9c7fae8aa77b"},
		RequestID: "d5a56be6-379e-4563-9357-c4741cc1c4e6", RemoteAddr: "127.0.0.1:40584", PrevHash: GenesisHash}
	b.Run("binary", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			Stored(&e)
		}
	})
	b.Run("json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			Encode(Seal(&e))
		}
	})
}
