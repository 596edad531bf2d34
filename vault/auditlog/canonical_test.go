package auditlog

import (
	"bytes"
	"testing"
	"time"
)

// TestCanonicalIsEncodingJSON: the hand-written canonical encoding is
// byte for byte what encoding/json writes, on entries that exercise every
// field, nil and empty lists, omitted fields and strings that need
// escaping (so chains hashed before it verify after it).
func TestCanonicalIsEncodingJSON(t *testing.T) {
	at := time.Date(2026, 11, 26, 3, 4, 5, 600700800, time.UTC)
	odd := []string{"", "plain-id", `quote " and \ backslash`, "<html> & </html>", "tab\tnewline\ncr\r", "\x00\x01\x1f\x7f",
		"é ü 日本", "\u2028\u2029", "bad utf8 \xff\xfe", "emoji 🙂"}
	entries := []Entry{
		{},
		{Seq: 1, Time: at, Actor: "a", Action: "records.create", Decision: DecisionOK, Collection: "c", Fields: []string{"ref", "secret"},
			RecordIDs: []string{"01a215f1-625a-7c70-a4cd-9c7fae8aa77b"}, RequestID: "r", RemoteAddr: "127.0.0.1:1", PrevHash: GenesisHash},
		{Seq: 1<<64 - 1, Time: at.In(time.FixedZone("x", -7*3600)), Fields: []string{}, RecordIDs: []string{}, Target: "t", Reason: "why",
			Tokens: []TokenDecision{{TokenHash: "h", Decision: "ok"}, {TokenHash: "h2", Collection: "c", Field: "f", RecordID: "r", Decision: "denied", Reason: "no_grant", GrantID: "g"}},
			Via:    "mcp", Client: "claude/1.0", Hash: "ignored"},
		{Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Tokens: []TokenDecision{}},
	}
	for _, s := range odd {
		entries = append(entries, Entry{Actor: s, Action: s, Decision: s, Collection: s, Fields: []string{s, s}, RecordIDs: []string{s}, Purpose: s,
			GrantID: s, ApprovalID: s, RequestID: s, RemoteAddr: s, Target: s, Reason: s, Via: s, Client: s, PrevHash: s,
			Tokens: []TokenDecision{{TokenHash: s, Collection: s, Field: s, RecordID: s, Decision: s, Reason: s, GrantID: s}}})
	}
	for i := range entries {
		if got, want := Canonical(&entries[i]), canonicalReflect(&entries[i]); !bytes.Equal(got, want) {
			t.Errorf("entry %d:\nby hand %s\njson    %s", i, got, want)
		}
	}
}

// FuzzCanonical: on any strings and times, the hand-written canonical
// encoding is encoding/json's.
func FuzzCanonical(f *testing.F) {
	f.Add(uint64(7), int64(1795664209237719922), "actor", "reason <&>", "tok", "c\"f", true)
	f.Add(uint64(0), int64(0), "", "\xff", "\u2028", "", false)
	f.Fuzz(func(t *testing.T, seq uint64, nanos int64, a, b, c, d string, lists bool) {
		e := Entry{Seq: seq, Time: time.Unix(0, nanos).UTC(), Actor: a, Action: b, Decision: c, Collection: d, Purpose: a + b,
			GrantID: c, ApprovalID: d, RequestID: a, RemoteAddr: b, Target: c, Reason: d, Via: a, Client: b, PrevHash: c}
		if lists {
			e.Fields, e.RecordIDs = []string{a, b}, []string{}
			e.Tokens = []TokenDecision{{TokenHash: a, Collection: b, Field: c, RecordID: d, Decision: a, Reason: b, GrantID: c}}
		}
		if got, want := Canonical(&e), canonicalReflect(&e); !bytes.Equal(got, want) {
			t.Fatalf("by hand %s\njson    %s", got, want)
		}
	})
}

// BenchmarkCanonical: a create's audit entry, by hand and by
// encoding/json, in the same run.
func BenchmarkCanonical(b *testing.B) {
	e := Entry{Seq: 4, Time: time.Now().UTC(), Actor: "d732fa27-ef27-4a80-9e41-7310e3420dae", Action: "records.create", Decision: DecisionOK,
		Collection: "load_1795664470611175082", Fields: []string{"ref", "secret"}, RecordIDs: []string{"01a215f1-625a-7c70-a4cd-9c7fae8aa77b"},
		RequestID: "d5a56be6-379e-4563-9357-c4741cc1c4e6", RemoteAddr: "127.0.0.1:40584", PrevHash: GenesisHash}
	for _, c := range []struct {
		name string
		fn   func(*Entry) []byte
	}{{"by-hand", Canonical}, {"encoding-json", canonicalReflect}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				c.fn(&e)
			}
		})
	}
}
