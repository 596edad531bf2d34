// Package jsontext writes JSON strings as encoding/json does, without its
// reflection, for the answers and values written on hot paths: a string
// with nothing to escape is copied between quotes, anything else goes
// through json.Marshal. One rule, shared by the vault and the HTTP API,
// so their output cannot drift from encoding/json's or from each other.
package jsontext

import "encoding/json"

// plain reports whether json.Marshal writes c as it is: printable ASCII,
// not a quote or backslash, and none of the characters it escapes for
// HTML.
func plain(c byte) bool {
	return c >= 0x20 && c <= 0x7e && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
}

// IsPlain reports whether raw is a JSON string literal that json.Marshal
// would write back byte for byte, of printable ASCII (other strings
// Marshal keeps as they are, such as most UTF-8, are reported false: the
// caller takes its slower, exact path).
func IsPlain(raw []byte) bool {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return false
	}
	for _, c := range raw[1 : len(raw)-1] {
		if !plain(c) {
			return false
		}
	}
	return true
}

// AppendString appends json.Marshal(s) to dst.
func AppendString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if !plain(s[i]) {
			b, _ := json.Marshal(s)
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}
