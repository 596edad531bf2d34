package httpapi

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/agentvault/agentvault/internal/jsontext"
	"github.com/agentvault/agentvault/vault"
)

// A create's body and answer are read and written here without
// reflection: encoding/json spends about a microsecond and a half per
// record of a batch building and walking a map each way. The reader takes
// only the plain shape, {"records":[{"fields":{...}}, ...]} with plain
// field names and no repeated name, and declines anything else, which
// then goes through encoding/json for its result or its exact error. On
// what it takes, its result is encoding/json's (FuzzCreateBody); the
// writer's output is encoding/json's byte for byte (TestRecordsAnswer,
// FuzzRecordsAnswer).

// maxFastDepth bounds the nesting the reader follows within a value;
// deeper values go to encoding/json.
const maxFastDepth = 64

// parseCreateBody reads a create's body, or reports false for anything
// but the plain shape. The batch's fields share one allocation, and a
// field name spelled as in the record before reuses its string.
func parseCreateBody(b []byte) ([]vault.NewRecord, bool) {
	p := scanner{b: b}
	if !p.lit('{') || !p.key("records") || !p.lit(':') || !p.lit('[') {
		return nil, false
	}
	var all []vault.FieldValue
	var ends []int // where each record's fields end in all
	if p.peek() == ']' {
		p.i++
	} else {
		for {
			var ok bool
			if all, ok = p.record(all, ends); !ok {
				return nil, false
			}
			ends = append(ends, len(all))
			if p.lit(',') {
				continue
			}
			if !p.lit(']') {
				return nil, false
			}
			break
		}
	}
	if !p.lit('}') {
		return nil, false
	}
	p.ws()
	recs := make([]vault.NewRecord, len(ends))
	start := 0
	for i, end := range ends {
		recs[i] = all[start:end:end]
		start = end
	}
	return recs, p.i == len(p.b)
}

type scanner struct {
	b []byte
	i int
}

func (p *scanner) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// peek skips white space and returns the next byte (0 at the end).
func (p *scanner) peek() byte {
	p.ws()
	if p.i < len(p.b) {
		return p.b[p.i]
	}
	return 0
}

// lit skips white space and the byte c, if it is next.
func (p *scanner) lit(c byte) bool {
	if p.peek() != c {
		return false
	}
	p.i++
	return true
}

// plain reads a plain string (printable ASCII, no escapes): an object
// key, or a value the fast path takes only in that form.
func (p *scanner) plain() (string, bool) {
	b, ok := p.plainBytes()
	return string(b), ok
}

// plainBytes is plain's string as the body's bytes.
func (p *scanner) plainBytes() ([]byte, bool) {
	if !p.lit('"') {
		return nil, false
	}
	start := p.i
	for ; p.i < len(p.b); p.i++ {
		switch c := p.b[p.i]; {
		case c == '"':
			p.i++
			return p.b[start : p.i-1], true
		case c < 0x20 || c >= 0x7f || c == '\\':
			return nil, false
		}
	}
	return nil, false
}

func (p *scanner) key(want string) bool {
	k, ok := p.plainBytes()
	return ok && string(k) == want
}

// record reads {"fields":{...}}, appending its fields to all; ends says
// where the records before end in all. A record with more fields than a
// collection holds, or a repeated name, is declined.
func (p *scanner) record(all []vault.FieldValue, ends []int) ([]vault.FieldValue, bool) {
	if !p.lit('{') || !p.key("fields") || !p.lit(':') || !p.lit('{') {
		return nil, false
	}
	first := len(all)
	var prev []vault.FieldValue // the record before, whose names are likely these
	if n := len(ends); n > 0 {
		start := 0
		if n > 1 {
			start = ends[n-2]
		}
		prev = all[start:ends[n-1]]
	}
	if p.peek() == '}' {
		p.i++
	} else {
		for {
			kb, ok := p.plainBytes()
			if !ok || !p.lit(':') || len(all)-first >= vault.MaxFields {
				return nil, false
			}
			j := len(all) - first
			var k string
			if j < len(prev) && prev[j].Name == string(kb) {
				k = prev[j].Name
			} else {
				k = string(kb)
			}
			for _, f := range all[first:] {
				if f.Name == k {
					return nil, false
				}
			}
			p.ws()
			start := p.i
			if !p.value(0) {
				return nil, false
			}
			all = append(all, vault.FieldValue{Name: k, Value: p.b[start:p.i:p.i]})
			if p.lit(',') {
				continue
			}
			if !p.lit('}') {
				return nil, false
			}
			break
		}
	}
	return all, p.lit('}')
}

// value skips one JSON value (after white space), checking it as
// encoding/json's scanner does.
func (p *scanner) value(depth int) bool {
	if depth > maxFastDepth {
		return false
	}
	switch c := p.peek(); {
	case c == '"':
		return p.str()
	case c == '{':
		p.i++
		if p.lit('}') {
			return true
		}
		for {
			if p.peek() != '"' || !p.str() || !p.lit(':') || !p.value(depth+1) {
				return false
			}
			if p.lit(',') {
				continue
			}
			return p.lit('}')
		}
	case c == '[':
		p.i++
		if p.lit(']') {
			return true
		}
		for {
			if !p.value(depth + 1) {
				return false
			}
			if p.lit(',') {
				continue
			}
			return p.lit(']')
		}
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number()
	case c == 't':
		return p.word("true")
	case c == 'f':
		return p.word("false")
	case c == 'n':
		return p.word("null")
	}
	return false
}

func (p *scanner) word(w string) bool {
	if !bytes.HasPrefix(p.b[p.i:], []byte(w)) {
		return false
	}
	p.i += len(w)
	return true
}

// str skips a string, escapes checked; other bytes from 0x20 up pass,
// as encoding/json's scanner lets them.
func (p *scanner) str() bool {
	p.i++ // the opening quote
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			return true
		case c < 0x20:
			return false
		case c == '\\':
			p.i++
			if p.i >= len(p.b) {
				return false
			}
			switch p.b[p.i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				p.i++
			case 'u':
				if p.i+5 > len(p.b) {
					return false
				}
				for _, h := range p.b[p.i+1 : p.i+5] {
					if !isHex(h) {
						return false
					}
				}
				p.i += 5
			default:
				return false
			}
		default:
			p.i++
		}
	}
	return false
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

// number skips -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
func (p *scanner) number() bool {
	b, i := p.b, p.i
	if i < len(b) && b[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
			n++
		}
		return n
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case digits() == 0:
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	p.i = i
	return true
}

// appendCreatedAnswer appends what writeJSON writes for {"records":
// recs} with each record as vault.Record (fields by name): encoding/json's
// output with its HTML escaping, and its newline. A create's records
// share one time, which is formatted once.
func appendCreatedAnswer(dst []byte, recs []vault.CreatedRecord) []byte {
	var at time.Time
	var atJSON []byte
	var order []int
	return appendAnswer(dst, `{"records":`, recs, func(dst []byte, r *vault.CreatedRecord) []byte {
		dst = append(dst, `{"id":`...)
		dst = jsontext.AppendString(dst, r.ID)
		dst = append(dst, `,"fields":{`...)
		order = byName(order[:0], r.Fields)
		for i, j := range order {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = jsontext.AppendString(dst, r.Fields[j].Name)
			dst = append(dst, ':')
			dst = appendRaw(dst, r.Fields[j].Value)
		}
		dst = append(dst, `},"created_at":`...)
		if atJSON == nil || !r.CreatedAt.Equal(at) || r.CreatedAt.Location() != at.Location() {
			at, atJSON = r.CreatedAt, appendTime(atJSON[:0], r.CreatedAt)
		}
		dst = append(dst, atJSON...)
		return append(dst, '}')
	})
}

// byName appends the indexes of fields in the order of their names, as
// encoding/json writes a map's keys; fields given in that order already
// (most) are not sorted.
func byName(dst []int, fields []vault.FieldValue) []int {
	sorted := true
	for i := range fields {
		dst = append(dst, i)
		if i > 0 && fields[i-1].Name > fields[i].Name {
			sorted = false
		}
	}
	if !sorted {
		slices.SortFunc(dst, func(a, b int) int { return strings.Compare(fields[a].Name, fields[b].Name) })
	}
	return dst
}

// appendTime appends t as encoding/json writes it.
func appendTime(dst []byte, t time.Time) []byte {
	b, err := t.MarshalJSON()
	if err != nil {
		// A year outside 0-9999: what encoding/json does with it.
		b, _ = json.Marshal(t)
	}
	return append(dst, b...)
}

// appendAnswer appends an answer that is one list of items under the
// name opened by head: {"name":[...]} and encoding/json's newline, null
// for a nil list.
func appendAnswer[T any](dst []byte, head string, items []T, item func([]byte, *T) []byte) []byte {
	dst = append(dst, head...)
	if items == nil {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, '[')
		for i := range items {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = item(dst, &items[i])
		}
		dst = append(dst, ']')
	}
	return append(dst, "}\n"...)
}

// appendRaw appends a raw value as encoding/json does: compacted, HTML
// characters and U+2028/U+2029 escaped, null when empty. A value with
// none of those to change is copied as it is.
func appendRaw(dst []byte, v json.RawMessage) []byte {
	if len(v) == 0 {
		return append(dst, "null"...)
	}
	if !needsRewrite(v) {
		return append(dst, v...)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	if err := enc.Encode(v); err != nil {
		return append(dst, "null"...) // not reached: values were read as JSON
	}
	return append(dst, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
}

// needsRewrite reports whether encoding/json would change raw value v:
// white space to drop, HTML characters to escape, or the first byte of
// U+2028 or U+2029 (0xe2, checked on the byte: some other characters
// start with it too, and take the slow path for nothing).
func needsRewrite(v []byte) bool {
	for _, c := range v {
		switch c {
		case ' ', '\t', '\n', '\r', '<', '>', '&', 0xe2:
			return true
		}
	}
	return false
}
