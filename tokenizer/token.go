package tokenizer

import (
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
)

// Kind is how a field's values become tokens.
type Kind string

// Token kinds a field may choose.
const (
	KindRandom           Kind = "random"
	KindDeterministic    Kind = "deterministic"
	KindFormatPreserving Kind = "format_preserving"
)

// Prefixes of the opaque token kinds.
const (
	RandomPrefix        = "tok_"
	DeterministicPrefix = "dtk_"
)

// MaxTokenLength bounds every token a client may present.
const MaxTokenLength = 128

// ErrMalformedToken reports a string that cannot be a token.
var ErrMalformedToken = errors.New("malformed token")

// PRF is the keyed function behind deterministic tokens.
type PRF interface {
	Compute(input []byte, n uint32) ([]byte, error)
}

// Random returns a fresh opaque token with 130 bits of randomness (a
// batch draws many through one Tokens).
func Random() string { return NewTokens(1).Random() }

// textAlphabet is rand.Text's: RFC 4648 base32.
const textAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"

// textLen is rand.Text's length: 26 base32 characters, 130 bits.
const textLen = 26

// Tokens draws opaque tokens, each rand.Text's encoding of 26 random
// bytes, reading crypto/rand once for a block of them rather than once a
// token: a batch's tokens cost one read. A Tokens is
// for one batch, then dropped; each token's bytes are cleared as it is
// made, and Clear clears the rest.
type Tokens struct {
	want  int
	block []byte // drawn from crypto/rand; block[:off] is used and cleared
	off   int
}

// NewTokens is a source for about n tokens (more are drawn if asked).
func NewTokens(n int) *Tokens { return &Tokens{want: min(max(n, 1), 1024)} }

// Random returns the next token.
func (t *Tokens) Random() string {
	if len(t.block)-t.off < textLen {
		t.block, t.off = make([]byte, t.want*textLen), 0
		rand.Read(t.block) // never fails (crypto/rand)
	}
	var out [len(RandomPrefix) + textLen]byte
	copy(out[:], RandomPrefix)
	drawn := t.block[t.off : t.off+textLen]
	for i, c := range drawn {
		out[len(RandomPrefix)+i] = textAlphabet[c%32]
	}
	clear(drawn)
	t.off += textLen
	return string(out[:])
}

// Clear clears the random bytes not yet used.
func (t *Tokens) Clear() { clear(t.block); t.block, t.off = nil, 0 }

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// Deterministic returns the token for value in field under key: the same
// inputs always give the same token.
func Deterministic(key PRF, field string, canonicalValue []byte) (string, error) {
	in := make([]byte, 0, len(field)+1+len(canonicalValue))
	in = append(in, field...)
	in = append(in, 0)
	in = append(in, canonicalValue...)
	out, err := key.Compute(in, 16)
	if err != nil {
		return "", fmt.Errorf("deterministic token: %w", err)
	}
	return DeterministicPrefix + b32.EncodeToString(out), nil
}

// ParseToken checks that s could be a token of some kind: non-empty, at
// most MaxTokenLength bytes, printable ASCII without spaces at either end,
// and well formed if it carries an opaque-token prefix. It does not say
// whether the token exists.
func ParseToken(s string) (string, error) {
	if s == "" || len(s) > MaxTokenLength {
		return "", ErrMalformedToken
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return "", ErrMalformedToken
		}
	}
	if s[0] == ' ' || s[len(s)-1] == ' ' {
		return "", ErrMalformedToken
	}
	for _, p := range []string{RandomPrefix, DeterministicPrefix} {
		if rest, ok := strings.CutPrefix(s, p); ok {
			if len(rest) != 26 {
				return "", ErrMalformedToken
			}
			if _, err := b32.DecodeString(rest); err != nil {
				return "", ErrMalformedToken
			}
		}
	}
	return s, nil
}
