package vault

import (
	"bytes"
	"encoding/json"
	"testing"
)

// TestQuoteTokenIsMarshal: a token in an answer is what json.Marshal
// writes, for every kind of token and for strings it must escape.
func TestQuoteTokenIsMarshal(t *testing.T) {
	for _, tok := range []string{"tok_ABCDEFGHIJKLMNOPQRSTUVWXYZ", "dtk_234567ABCDEFGHIJKLMNOPQR", "4111 1111 1111 1234", "123-45-6789",
		"", `quote " back \ slash`, "<&>", "tab\t", "é", "\u2028", "\xff"} {
		want, _ := json.Marshal(tok)
		if got := quoteToken(tok); !bytes.Equal(got, want) {
			t.Errorf("%q: %s, json.Marshal %s", tok, got, want)
		}
	}
}
