package httpapi

import (
	"bytes"
	"encoding/json"
	"slices"

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
// but the plain shape.
func parseCreateBody(b []byte) ([]map[string]json.RawMessage, bool) {
	p := scanner{b: b}
	if !p.lit('{') || !p.key("records") || !p.lit(':') || !p.lit('[') {
		return nil, false
	}
	recs := []map[string]json.RawMessage{}
	if p.peek() == ']' {
		p.i++
	} else {
		for {
			fields, ok := p.record()
			if !ok {
				return nil, false
			}
			recs = append(recs, fields)
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
	if !p.lit('"') {
		return "", false
	}
	start := p.i
	for ; p.i < len(p.b); p.i++ {
		switch c := p.b[p.i]; {
		case c == '"':
			s := string(p.b[start:p.i])
			p.i++
			return s, true
		case c < 0x20 || c >= 0x7f || c == '\\':
			return "", false
		}
	}
	return "", false
}

func (p *scanner) key(want string) bool {
	k, ok := p.plain()
	return ok && k == want
}

// record reads {"fields":{...}}.
func (p *scanner) record() (map[string]json.RawMessage, bool) {
	if !p.lit('{') || !p.key("fields") || !p.lit(':') || !p.lit('{') {
		return nil, false
	}
	fields := map[string]json.RawMessage{}
	if p.peek() == '}' {
		p.i++
	} else {
		for {
			k, ok := p.plain()
			if !ok || !p.lit(':') {
				return nil, false
			}
			if _, dup := fields[k]; dup {
				return nil, false
			}
			p.ws()
			start := p.i
			if !p.value(0) {
				return nil, false
			}
			fields[k] = p.b[start:p.i:p.i]
			if p.lit(',') {
				continue
			}
			if !p.lit('}') {
				return nil, false
			}
			break
		}
	}
	return fields, p.lit('}')
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

// appendRecordsAnswer appends what writeJSON writes for
// {"records": recs}: encoding/json's output with its HTML escaping, and
// its newline.
func appendRecordsAnswer(dst []byte, recs []vault.Record) []byte {
	return appendAnswer(dst, `{"records":`, recs, appendRecord)
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

func appendRecord(dst []byte, r *vault.Record) []byte {
	dst = append(dst, `{"id":`...)
	dst = appendJSONString(dst, r.ID)
	dst = append(dst, `,"fields":`...)
	if r.Fields == nil {
		dst = append(dst, "null"...)
	} else {
		names := make([]string, 0, len(r.Fields))
		for k := range r.Fields {
			names = append(names, k)
		}
		slices.Sort(names)
		dst = append(dst, '{')
		for i, k := range names {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, k)
			dst = append(dst, ':')
			dst = appendRaw(dst, r.Fields[k])
		}
		dst = append(dst, '}')
	}
	dst = append(dst, `,"created_at":`...)
	t, err := r.CreatedAt.MarshalJSON()
	if err != nil {
		// A year outside 0-9999: what encoding/json does with it.
		b, _ := json.Marshal(r.CreatedAt)
		return append(append(dst, b...), '}')
	}
	dst = append(dst, t...)
	return append(dst, '}')
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

// appendJSONString appends s as encoding/json writes a string with HTML
// escaping: as is between quotes when it is printable ASCII with nothing
// to escape.
func appendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(s)
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}
