package auditlog

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"time"
	"unicode/utf8"
)

// Most audit entries (one per create, read and reveal) are stored in a
// compact binary form behind a marker byte: the same fields in the
// canonical order, integers as varints, the time as Unix seconds and
// nanoseconds, ids and hashes as their bytes. A create's entry takes
// about 210 bytes instead of about 520, and every byte not stored is a
// byte the store does not copy through its logs, memtables, flushes and
// compactions. What is hashed, verified and exported stays the canonical
// JSON: Decode rebuilds it, byte for byte (FuzzBinaryEntry), and an entry
// the binary form cannot carry exactly (a time not in UTC, a year past
// 9999, a string that is not UTF-8, which JSON would read back changed)
// is stored as JSON.
//
//	entry:  0x02 | uvarint seq | varint unix seconds | uvarint nanoseconds |
//	        actor action decision collection | list fields | list record_ids |
//	        purpose grant_id approval_id request_id remote_addr target reason |
//	        uvarint token count | token* | via client prev_hash hash
//	token:  token_hash collection field record_id decision reason grant_id
//	string: 0 | uvarint length | bytes     (as is)
//	        1 | 16 bytes                   (a UUID in its canonical lower-case form)
//	        2 | 32 bytes                   (64 lower-case hex digits)
//	list:   uvarint count+1 | string*      (0: null)
const binaryEntry = 0x02 // never the first byte of JSON, nor compressedEntry

const (
	strRaw = iota
	strUUID
	strHex32
)

// encodeBinary returns e's binary form, or false when it cannot carry e
// exactly.
func encodeBinary(e *Entry) ([]byte, bool) {
	t := e.Time
	if t.Location() != time.UTC || t.Year() < 0 || t.Year() > 9999 || !validStrings(e) {
		return nil, false
	}
	b := make([]byte, 0, 256+96*len(e.Tokens))
	b = append(b, binaryEntry)
	b = binary.AppendUvarint(b, e.Seq)
	b = binary.AppendVarint(b, t.Unix())
	b = binary.AppendUvarint(b, uint64(t.Nanosecond()))
	for _, s := range [...]string{e.Actor, e.Action, e.Decision, e.Collection} {
		b = appendBinString(b, s)
	}
	b = appendBinList(b, e.Fields)
	b = appendBinList(b, e.RecordIDs)
	for _, s := range [...]string{e.Purpose, e.GrantID, e.ApprovalID, e.RequestID, e.RemoteAddr, e.Target, e.Reason} {
		b = appendBinString(b, s)
	}
	b = binary.AppendUvarint(b, uint64(len(e.Tokens)))
	for i := range e.Tokens {
		d := &e.Tokens[i]
		for _, s := range [...]string{d.TokenHash, d.Collection, d.Field, d.RecordID, d.Decision, d.Reason, d.GrantID} {
			b = appendBinString(b, s)
		}
	}
	for _, s := range [...]string{e.Via, e.Client, e.PrevHash, e.Hash} {
		b = appendBinString(b, s)
	}
	return b, true
}

func appendBinString(b []byte, s string) []byte {
	if len(s) == 36 {
		if id, ok := parseUUID(s); ok {
			return append(append(b, strUUID), id[:]...)
		}
	}
	if len(s) == 64 && isLowerHex(s) {
		b = append(b, strHex32)
		for i := 0; i < 64; i += 2 {
			b = append(b, byte(hexVal[s[i]])<<4|byte(hexVal[s[i+1]]))
		}
		return b
	}
	b = append(b, strRaw)
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// validStrings reports whether every string of e is UTF-8.
func validStrings(e *Entry) bool {
	ok := func(ss ...string) bool {
		for _, s := range ss {
			if !utf8.ValidString(s) {
				return false
			}
		}
		return true
	}
	if !ok(e.Actor, e.Action, e.Decision, e.Collection, e.Purpose, e.GrantID, e.ApprovalID, e.RequestID,
		e.RemoteAddr, e.Target, e.Reason, e.Via, e.Client, e.PrevHash, e.Hash) || !ok(e.Fields...) || !ok(e.RecordIDs...) {
		return false
	}
	for _, d := range e.Tokens {
		if !ok(d.TokenHash, d.Collection, d.Field, d.RecordID, d.Decision, d.Reason, d.GrantID) {
			return false
		}
	}
	return true
}

func appendBinList(b []byte, vs []string) []byte {
	if vs == nil {
		return append(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(vs))+1)
	for _, s := range vs {
		b = appendBinString(b, s)
	}
	return b
}

// hexVal is a lower-case hex digit's value, -1 for any other byte.
var hexVal = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = int8(c - '0')
	}
	for c := 'a'; c <= 'f'; c++ {
		t[c] = int8(c - 'a' + 10)
	}
	return t
}()

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if hexVal[s[i]] < 0 {
			return false
		}
	}
	return true
}

// uuidDigits are where a UUID's hex digit pairs start in its text form.
var uuidDigits = [16]int{0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34}

// parseUUID reads a UUID written as 8-4-4-4-12 lower-case hex digits.
func parseUUID(s string) (id [16]byte, ok bool) {
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return id, false
	}
	for i, p := range uuidDigits {
		hi, lo := hexVal[s[p]], hexVal[s[p+1]]
		if hi < 0 || lo < 0 {
			return id, false
		}
		id[i] = byte(hi)<<4 | byte(lo)
	}
	return id, true
}

func formatUUID(id []byte) string {
	var s [36]byte
	formatUUIDInto(&s, id)
	return string(s[:])
}

func formatUUIDInto(s *[36]byte, id []byte) {
	hex.Encode(s[0:8], id[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], id[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], id[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], id[8:10])
	s[23] = '-'
	hex.Encode(s[24:], id[10:])
}

var errBinary = errors.New("audit entry: bad binary encoding")

// binReader reads the binary form; the first error sticks.
type binReader struct {
	b   []byte
	err error
}

func (r *binReader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *binReader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *binReader) fail() {
	if r.err == nil {
		r.err = errBinary
	}
	r.b = nil
}

func (r *binReader) take(n uint64) []byte {
	if n > uint64(len(r.b)) {
		r.fail()
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *binReader) str() string {
	if len(r.b) == 0 {
		r.fail()
		return ""
	}
	tag := r.b[0]
	r.b = r.b[1:]
	switch tag {
	case strRaw:
		v := r.take(r.uvarint())
		if !utf8.Valid(v) { // never written: see validStrings
			r.fail()
		}
		return string(v)
	case strUUID:
		if v := r.take(16); v != nil {
			return formatUUID(v)
		}
	case strHex32:
		if v := r.take(32); v != nil {
			return hex.EncodeToString(v)
		}
	default:
		r.fail()
	}
	return ""
}

// strIs reads a string and reports whether it is want, without making
// it.
func (r *binReader) strIs(want string) bool {
	if len(r.b) == 0 {
		r.fail()
		return false
	}
	tag := r.b[0]
	r.b = r.b[1:]
	switch tag {
	case strRaw:
		v := r.take(r.uvarint())
		return r.err == nil && string(v) == want
	case strUUID:
		if v := r.take(16); v != nil {
			var s [36]byte
			formatUUIDInto(&s, v)
			return string(s[:]) == want
		}
	case strHex32:
		if v := r.take(32); v != nil {
			var s [64]byte
			hex.Encode(s[:], v)
			return string(s[:]) == want
		}
	default:
		r.fail()
	}
	return false
}

// listIs reads a list and reports whether it is want (nil and empty
// apart).
func (r *binReader) listIs(want []string) bool {
	n := r.uvarint()
	if r.err != nil || (n == 0) != (want == nil) || (n > 0 && n-1 != uint64(len(want))) {
		return false
	}
	for _, w := range want {
		if !r.strIs(w) {
			return false
		}
	}
	return true
}

func (r *binReader) list() []string {
	n := r.uvarint()
	if n == 0 || r.err != nil {
		return nil
	}
	n--
	if n > uint64(len(r.b)) { // each string takes a byte at least
		r.fail()
		return nil
	}
	vs := make([]string, n)
	for i := range vs {
		vs[i] = r.str()
	}
	return vs
}

// decodeBinary reads an entry's binary form (b without its marker).
func decodeBinary(b []byte) (*Entry, error) {
	r := &binReader{b: b}
	e := &Entry{Seq: r.uvarint()}
	sec, nsec := r.varint(), r.uvarint()
	if nsec >= 1e9 {
		r.fail()
	}
	e.Time = time.Unix(sec, int64(nsec)).UTC()
	e.Actor, e.Action, e.Decision, e.Collection = r.str(), r.str(), r.str(), r.str()
	e.Fields, e.RecordIDs = r.list(), r.list()
	e.Purpose, e.GrantID, e.ApprovalID, e.RequestID = r.str(), r.str(), r.str(), r.str()
	e.RemoteAddr, e.Target, e.Reason = r.str(), r.str(), r.str()
	if n := r.uvarint(); n > 0 && r.err == nil {
		if n > uint64(len(r.b)) {
			r.fail()
		} else {
			e.Tokens = make([]TokenDecision, n)
			for i := range e.Tokens {
				d := &e.Tokens[i]
				d.TokenHash, d.Collection, d.Field, d.RecordID = r.str(), r.str(), r.str(), r.str()
				d.Decision, d.Reason, d.GrantID = r.str(), r.str(), r.str()
			}
		}
	}
	e.Via, e.Client, e.PrevHash, e.Hash = r.str(), r.str(), r.str(), r.str()
	if r.err == nil && len(r.b) != 0 {
		r.fail()
	}
	if r.err != nil || e.Time.Year() > 9999 {
		return nil, errBinary
	}
	return e, nil
}

// matchesBinary reports whether b, a binary form without its marker,
// decodes to e exactly (so its JSON is e's): the check Stored makes
// before it keeps a binary form, without building the entry or its JSON.
// FuzzBinaryEntry holds it to decodeBinary.
func matchesBinary(b []byte, e *Entry) bool {
	r := &binReader{b: b}
	if r.uvarint() != e.Seq {
		return false
	}
	sec, nsec := r.varint(), r.uvarint()
	if r.err != nil || nsec >= 1e9 || e.Time.Location() != time.UTC || !time.Unix(sec, int64(nsec)).Equal(e.Time) || e.Time.Year() > 9999 {
		return false
	}
	for _, s := range [...]string{e.Actor, e.Action, e.Decision, e.Collection} {
		if !r.strIs(s) {
			return false
		}
	}
	if !r.listIs(e.Fields) || !r.listIs(e.RecordIDs) {
		return false
	}
	for _, s := range [...]string{e.Purpose, e.GrantID, e.ApprovalID, e.RequestID, e.RemoteAddr, e.Target, e.Reason} {
		if !r.strIs(s) {
			return false
		}
	}
	if n := r.uvarint(); r.err != nil || n != uint64(len(e.Tokens)) {
		return false
	}
	for i := range e.Tokens {
		d := &e.Tokens[i]
		for _, s := range [...]string{d.TokenHash, d.Collection, d.Field, d.RecordID, d.Decision, d.Reason, d.GrantID} {
			if !r.strIs(s) {
				return false
			}
		}
	}
	for _, s := range [...]string{e.Via, e.Client, e.PrevHash, e.Hash} {
		if !r.strIs(s) {
			return false
		}
	}
	return r.err == nil && len(r.b) == 0
}
