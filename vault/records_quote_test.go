package vault

import (
	"bytes"
	"encoding/json"
	"testing"
)

// TestQuotedTokenIsMarshal: a token in an answer is what json.Marshal
// writes, for every kind of token and for strings it must escape.
func TestQuotedTokenIsMarshal(t *testing.T) {
	for _, tok := range []string{"tok_ABCDEFGHIJKLMNOPQRSTUVWXYZ", "dtk_234567ABCDEFGHIJKLMNOPQR", "4111 1111 1111 1234", "123-45-6789",
		"", `quote " back \ slash`, "<&>", "tab\t", "é", "\u2028", "\xff"} {
		want, _ := json.Marshal(tok)
		// After other bytes, as a batch's tokens share one buffer.
		if got := appendQuotedToken([]byte(`"x"`), tok); !bytes.Equal(got[3:], want) {
			t.Errorf("%q: %s, json.Marshal %s", tok, got[3:], want)
		}
	}
}
