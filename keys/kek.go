package keys

import (
	"context"
	"errors"

	"github.com/tink-crypto/tink-go/v2/tink"
)

// ErrKMSUnavailable reports that the KEK provider could not be reached or
// did not answer in time. Callers map it to 503 and retry later; nothing
// was changed.
var ErrKMSUnavailable = errors.New("key management service unavailable")

// KEK is a key-encryption key whose material stays with its provider. It
// wraps and unwraps keysets; it never sees a field value.
type KEK interface {
	tink.AEAD
	// Check reports whether the provider is reachable and the key usable.
	Check(ctx context.Context) error
	// Describe names the provider, the key and the version new wraps use.
	Describe(ctx context.Context) (KEKInfo, error)
	Rotator
}

// KEKInfo describes a KEK for operators. It carries no key material.
type KEKInfo struct {
	Provider string `json:"provider"`
	Key      string `json:"key"`
	Version  int    `json:"version"`
	// MinDecryptionVersion is the oldest version that still unwraps (Vault
	// Transit's min_decryption_version; 1 for the local KEK).
	MinDecryptionVersion int `json:"min_decryption_version"`
}
