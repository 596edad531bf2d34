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

// Random returns a fresh opaque token with 128 bits of randomness.
func Random() string { return RandomPrefix + rand.Text() }

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
