package keys

import (
	"fmt"

	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/mac"
	"github.com/tink-crypto/tink-go/v2/tink"
)

// MACKey authenticates data at rest outside the vault (backups): a Tink
// HMAC-SHA256 keyset, stored only wrapped by the KEK, so whoever holds the
// data without the KEK can neither check nor forge a tag.
type MACKey struct {
	handle *keyset.Handle
	mac    tink.MAC
}

// NewMACKey generates a fresh HMAC-SHA256 keyset (256-bit tags).
func (m *Manager) NewMACKey() (*MACKey, error) {
	h, err := keyset.NewHandle(mac.HMACSHA256Tag256KeyTemplate())
	if err != nil {
		return nil, fmt.Errorf("generate MAC keyset: %w", err)
	}
	return newMACKey(h)
}

func newMACKey(h *keyset.Handle) (*MACKey, error) {
	p, err := mac.New(h)
	if err != nil {
		return nil, fmt.Errorf("MAC keyset primitive: %w", err)
	}
	return &MACKey{handle: h, mac: p}, nil
}

// WrapMACKey encrypts the keyset under the KEK; scope names its use.
func (m *Manager) WrapMACKey(k *MACKey, scope string) ([]byte, error) {
	return m.wrap(k.handle, scope)
}

// OpenMACKey unwraps a MAC keyset wrapped for scope.
func (m *Manager) OpenMACKey(wrapped []byte, scope string) (*MACKey, error) {
	h, err := m.unwrap(wrapped, scope)
	if err != nil {
		return nil, err
	}
	return newMACKey(h)
}

// Compute returns data's tag.
func (k *MACKey) Compute(data []byte) ([]byte, error) { return k.mac.ComputeMAC(data) }

// Verify checks data's tag in constant time.
func (k *MACKey) Verify(tag, data []byte) error { return k.mac.VerifyMAC(tag, data) }
