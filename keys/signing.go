package keys

import (
	"bytes"
	"fmt"

	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/signature"
	"github.com/tink-crypto/tink-go/v2/tink"
)

// SigningKey signs audit checkpoints: a Tink Ed25519 keyset whose private
// part is stored only wrapped by the KEK and whose public part anyone may
// hold to check an exported log.
type SigningKey struct {
	handle *keyset.Handle
	signer tink.Signer
}

// NewSigningKey generates a fresh Ed25519 keyset.
func (m *Manager) NewSigningKey() (*SigningKey, error) {
	h, err := keyset.NewHandle(signature.ED25519KeyTemplate())
	if err != nil {
		return nil, fmt.Errorf("generate signing keyset: %w", err)
	}
	return newSigningKey(h)
}

func newSigningKey(h *keyset.Handle) (*SigningKey, error) {
	s, err := signature.NewSigner(h)
	if err != nil {
		return nil, fmt.Errorf("signing keyset primitive: %w", err)
	}
	return &SigningKey{handle: h, signer: s}, nil
}

// WrapSigningKey encrypts the private keyset under the KEK for storage.
func (m *Manager) WrapSigningKey(k *SigningKey, scope string) ([]byte, error) {
	return m.wrap(k.handle, scope)
}

// OpenSigningKey unwraps a stored signing keyset.
func (m *Manager) OpenSigningKey(wrapped []byte, scope string) (*SigningKey, error) {
	h, err := m.unwrap(wrapped, scope)
	if err != nil {
		return nil, err
	}
	return newSigningKey(h)
}

// Sign signs data.
func (k *SigningKey) Sign(data []byte) ([]byte, error) { return k.signer.Sign(data) }

// PublicKeyset returns the public keyset as Tink JSON: no secret material.
func (k *SigningKey) PublicKeyset() ([]byte, error) {
	pub, err := k.handle.Public()
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := pub.WriteWithNoSecrets(keyset.NewJSONWriter(&buf)); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// NewVerifier reads a public keyset (Tink JSON) for checking signatures.
func NewVerifier(publicKeyset []byte) (tink.Verifier, error) {
	h, err := keyset.ReadWithNoSecrets(keyset.NewJSONReader(bytes.NewReader(publicKeyset)))
	if err != nil {
		return nil, fmt.Errorf("read public keyset: %w", err)
	}
	return signature.NewVerifier(h)
}
