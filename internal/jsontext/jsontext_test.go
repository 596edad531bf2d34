package jsontext

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzAppendString: AppendString is json.Marshal, after other bytes, and
// what IsPlain takes Marshal writes back as it is.
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"tok_ABCDEFGHIJKLMNOPQRSTUVWXYZ", "dtk_234567ABCDEFGHIJKLMNOPQR", "123-45-6789", "4111 1111 1111 1234", "", `quote " back \ slash`, "<&>", "tab\t", "é", "\u2028", "\xff", "\x7f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		if got := AppendString([]byte("x"), s); !bytes.Equal(got[1:], want) || got[0] != 'x' {
			t.Fatalf("%q: %s, json.Marshal %s", s, got[1:], want)
		}
		quoted := append(append([]byte{'"'}, s...), '"')
		if IsPlain(quoted) && !bytes.Equal(quoted, want) {
			t.Fatalf("%q: IsPlain, but json.Marshal writes %s", s, want)
		}
	})
}
