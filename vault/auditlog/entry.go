package auditlog

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/klauspost/compress/s2"
)

// Entry is one record of the tamper-evident audit log. It never holds
// a sensitive value; tokens appear only as keyed hashes. Hash is the
// SHA-256 of the entry's canonical JSON encoding with Hash empty, which
// covers PrevHash, so every entry commits to all entries before it.
type Entry struct {
	Seq        uint64          `json:"seq"`
	Time       time.Time       `json:"time"`
	Actor      string          `json:"actor"`
	Action     string          `json:"action"`
	Decision   string          `json:"decision"`
	Collection string          `json:"collection"`
	Fields     []string        `json:"fields"`
	RecordIDs  []string        `json:"record_ids"`
	Purpose    string          `json:"purpose"`
	GrantID    string          `json:"grant_id"`
	ApprovalID string          `json:"approval_id"`
	RequestID  string          `json:"request_id"`
	RemoteAddr string          `json:"remote_addr,omitempty"`
	Target     string          `json:"target,omitempty"`
	Reason     string          `json:"reason,omitempty"`
	Tokens     []TokenDecision `json:"tokens,omitempty"`
	// Via names the way the call came in when not the plain HTTP API
	// ("mcp"), and Client the MCP client's name/version it reported.
	Via      string `json:"via,omitempty"`
	Client   string `json:"client,omitempty"`
	PrevHash string `json:"prev_hash"`
	Hash     string `json:"hash"`
}

// TokenDecision is the outcome for one token of a detokenize request.
type TokenDecision struct {
	TokenHash  string `json:"token_hash"`
	Collection string `json:"collection,omitempty"`
	Field      string `json:"field,omitempty"`
	RecordID   string `json:"record_id,omitempty"`
	Decision   string `json:"decision"`
	Reason     string `json:"reason,omitempty"`
	GrantID    string `json:"grant_id,omitempty"`
}

// Audit decisions.
const (
	DecisionOK      = "ok"
	DecisionAllowed = "allowed"
	DecisionDenied  = "denied"
	DecisionPending = "pending_approval"
	DecisionPartial = "partial"
)

// GenesisHash is the PrevHash of the first entry.
var GenesisHash = hex.EncodeToString(make([]byte, sha256.Size))

// Canonical is the entry's hashed encoding: its JSON with Hash empty,
// exactly as encoding/json writes the struct (HTML left unescaped), which
// is what every stored chain was hashed over. It is written by hand
// because it runs for every audited request; TestCanonicalIsEncodingJSON
// and FuzzCanonical hold it to encoding/json.
func Canonical(e *Entry) []byte {
	b := make([]byte, 0, 512+128*len(e.Tokens)+40*(len(e.RecordIDs)+len(e.Fields)))
	b = append(b, `{"seq":`...)
	b = strconv.AppendUint(b, e.Seq, 10)
	b = append(b, `,"time":`...)
	t, err := e.Time.MarshalJSON()
	if err != nil { // a year outside 0-9999: encoding/json's own handling
		return canonicalReflect(e)
	}
	b = append(b, t...)
	b = appendField(b, "actor", e.Actor)
	b = appendField(b, "action", e.Action)
	b = appendField(b, "decision", e.Decision)
	b = appendField(b, "collection", e.Collection)
	b = appendList(b, "fields", e.Fields)
	b = appendList(b, "record_ids", e.RecordIDs)
	b = appendField(b, "purpose", e.Purpose)
	b = appendField(b, "grant_id", e.GrantID)
	b = appendField(b, "approval_id", e.ApprovalID)
	b = appendField(b, "request_id", e.RequestID)
	b = appendOptional(b, "remote_addr", e.RemoteAddr)
	b = appendOptional(b, "target", e.Target)
	b = appendOptional(b, "reason", e.Reason)
	if len(e.Tokens) > 0 {
		b = append(b, `,"tokens":[`...)
		for i, d := range e.Tokens {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"token_hash":`...)
			b = appendString(b, d.TokenHash)
			b = appendOptional(b, "collection", d.Collection)
			b = appendOptional(b, "field", d.Field)
			b = appendOptional(b, "record_id", d.RecordID)
			b = appendField(b, "decision", d.Decision)
			b = appendOptional(b, "reason", d.Reason)
			b = appendOptional(b, "grant_id", d.GrantID)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	b = appendOptional(b, "via", e.Via)
	b = appendOptional(b, "client", e.Client)
	b = appendField(b, "prev_hash", e.PrevHash)
	return append(b, `,"hash":""}`...)
}

// canonicalReflect is Canonical by encoding/json itself.
func canonicalReflect(e *Entry) []byte {
	c := *e
	c.Hash = ""
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(&c) // plain data: cannot fail
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

func appendField(b []byte, name, v string) []byte {
	b = append(b, `,"`...)
	b = append(b, name...)
	b = append(b, `":`...)
	return appendString(b, v)
}

func appendOptional(b []byte, name, v string) []byte {
	if v == "" {
		return b
	}
	return appendField(b, name, v)
}

func appendList(b []byte, name string, vs []string) []byte {
	b = append(b, `,"`...)
	b = append(b, name...)
	b = append(b, `":`...)
	if vs == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i, v := range vs {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, v)
	}
	return append(b, ']')
}

// appendString appends s as a JSON string: as is between quotes when it
// is printable ASCII with nothing to escape (ids, names, hashes), and
// otherwise as encoding/json escapes it.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			_ = enc.Encode(s)
			return append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

func Hash(e *Entry) string {
	h := sha256.Sum256(Canonical(e))
	return hex.EncodeToString(h[:])
}

// Seal sets e.Hash and returns e's stored encoding, marshalling once:
// Hash is the last field, so the canonical encoding ends in "hash":""}
// and the stored one differs only there.
func Seal(e *Entry) []byte { return withHash(seal(e), e.Hash) }

// seal sets e.Hash and returns e's canonical encoding.
func seal(e *Entry) []byte {
	e.Hash = ""
	canon := Canonical(e)
	sum := sha256.Sum256(canon)
	e.Hash = hex.EncodeToString(sum[:])
	return canon
}

// withHash is a canonical encoding (ending in "hash":""}) with hash in
// its place: an entry's stored JSON.
func withHash(canon []byte, hash string) []byte {
	const tail = `,"hash":""}`
	out := make([]byte, 0, len(canon)+len(hash))
	out = append(out, canon[:len(canon)-len(tail)]...)
	out = appendField(out, "hash", hash)
	return append(out, '}')
}

// Large audit entries (a 1,000-token detokenize request's per-token
// decisions, a batch's record ids) are stored S2-compressed behind a
// marker byte: the canonical JSON, which the hash covers, compresses to a
// fraction, and every byte not stored is a byte Badger does not copy
// through its WAL, memtable, L0 flush and compactions. Small entries stay
// plain JSON. Readers go through Decode.
const (
	compressEntriesOver = 4096
	compressedEntry     = 0x01 // never the first byte of JSON
	maxEntryBytes       = 64 << 20
)

// Encode is how an entry's canonical JSON is stored: S2-compressed
// behind a marker byte when large, as is otherwise.
func Encode(canon []byte) []byte {
	if len(canon) < compressEntriesOver {
		return canon
	}
	out := make([]byte, 1+s2.MaxEncodedLen(len(canon)))
	out[0] = compressedEntry
	return out[:1+len(s2.Encode(out[1:], canon))]
}

// Stored seals e (sets e.Hash) and returns how it is stored: the binary
// form when it carries e exactly, checked by reading it back against e
// (an audit entry stored wrong would fail verification for ever),
// otherwise its JSON through Encode.
func Stored(e *Entry) []byte {
	canon := seal(e)
	if len(canon)+len(e.Hash) < compressEntriesOver {
		if b, ok := encodeBinary(e); ok && matchesBinary(b[1:], e) {
			return b
		}
	}
	return Encode(withHash(canon, e.Hash))
}

// DecodeEntry reads a stored entry.
func DecodeEntry(v []byte) (*Entry, error) {
	if len(v) > 0 && v[0] == binaryEntry {
		return decodeBinary(v[1:])
	}
	raw, err := Decode(v)
	if err != nil {
		return nil, err
	}
	var e Entry
	if err := json.Unmarshal(raw, &e); err != nil {
		return nil, err
	}
	return &e, nil
}

// Decode returns a stored entry's JSON: as stored, or rebuilt from its
// binary form or decompressed.
func Decode(v []byte) ([]byte, error) {
	if len(v) > 0 && v[0] == binaryEntry {
		e, err := decodeBinary(v[1:])
		if err != nil {
			return nil, err
		}
		return withHash(Canonical(e), e.Hash), nil
	}
	if len(v) == 0 || v[0] != compressedEntry {
		return v, nil
	}
	n, err := s2.DecodedLen(v[1:])
	if err != nil || n > maxEntryBytes {
		return nil, fmt.Errorf("audit entry: bad compressed encoding")
	}
	return s2.Decode(nil, v[1:])
}
