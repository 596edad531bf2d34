package keys

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/keyset"
	tinkpb "github.com/tink-crypto/tink-go/v2/proto/tink_go_proto"
	"google.golang.org/protobuf/proto"
)

// Key states, as operators see them.
const (
	StateEnabled   = "enabled"
	StateDisabled  = "disabled"
	StateDestroyed = "destroyed"
)

// KeyInfo describes one key of a keyset. It carries no key material.
type KeyInfo struct {
	ID      uint32 `json:"key_id"`
	Primary bool   `json:"primary"`
	State   string `json:"state"`
}

func keysetInfo(h *keyset.Handle) []KeyInfo {
	ki := h.KeysetInfo()
	out := make([]KeyInfo, 0, len(ki.GetKeyInfo()))
	for _, k := range ki.GetKeyInfo() {
		st := StateEnabled
		if k.GetStatus() != tinkpb.KeyStatusType_ENABLED {
			st = StateDisabled
		}
		out = append(out, KeyInfo{ID: k.GetKeyId(), Primary: k.GetKeyId() == ki.GetPrimaryKeyId(), State: st})
	}
	return out
}

// Keys lists the data keyset's keys.
func (k *DataKey) Keys() []KeyInfo { return keysetInfo(k.handle) }

// Keys lists the index keyset's keys.
func (k *IndexKey) Keys() []KeyInfo { return keysetInfo(k.handle) }

// Has reports whether the keyset holds key id (in any state).
func (k *DataKey) Has(id uint32) bool {
	for _, ki := range k.Keys() {
		if ki.ID == id {
			return true
		}
	}
	return false
}

// Rotate returns a copy of the keyset with a new AES-256-GCM key as its
// primary: new ciphertexts use it, old ones still decrypt.
func (k *DataKey) Rotate() (*DataKey, uint32, error) {
	m := keyset.NewManagerFromHandle(k.handle)
	id, err := m.Add(aead.AES256GCMKeyTemplate())
	if err != nil {
		return nil, 0, fmt.Errorf("add data key: %w", err)
	}
	if err := m.SetPrimary(id); err != nil {
		return nil, 0, fmt.Errorf("set primary data key: %w", err)
	}
	h, err := m.Handle()
	if err != nil {
		return nil, 0, err
	}
	nk, err := newDataKey(h)
	return nk, id, err
}

// Disable returns a copy of the keyset with key id disabled: it no longer
// decrypts, and its material stays (Enable would bring it back).
func (k *DataKey) Disable(id uint32) (*DataKey, error) {
	m := keyset.NewManagerFromHandle(k.handle)
	if err := m.Disable(id); err != nil {
		return nil, fmt.Errorf("disable key %d: %w", id, err)
	}
	h, err := m.Handle()
	if err != nil {
		return nil, err
	}
	return newDataKey(h)
}

// Destroy returns a copy of the keyset without key id: its material is
// gone from the keyset, and what it encrypted can never be decrypted.
func (k *DataKey) Destroy(id uint32) (*DataKey, error) {
	m := keyset.NewManagerFromHandle(k.handle)
	if err := m.Delete(id); err != nil {
		return nil, fmt.Errorf("destroy key %d: %w", id, err)
	}
	h, err := m.Handle()
	if err != nil {
		return nil, err
	}
	return newDataKey(h)
}

// Rewrap opens a wrapped keyset and wraps it again under the KEK's current
// version, with the same scope.
func (m *Manager) Rewrap(wrapped []byte, scope string) ([]byte, error) {
	h, err := m.unwrap(wrapped, scope)
	if err != nil {
		return nil, err
	}
	return m.wrap(h, scope)
}

// KEKCiphertext returns the KEK's ciphertext inside a wrapped keyset (the
// part the KEK made), to tell which KEK version wrapped it.
func KEKCiphertext(wrapped []byte) ([]byte, error) {
	var ek tinkpb.EncryptedKeyset
	if err := proto.Unmarshal(wrapped, &ek); err != nil {
		return nil, fmt.Errorf("not a wrapped keyset: %w", err)
	}
	return ek.GetEncryptedKeyset(), nil
}

// VaultVersion reads the key version from a Vault Transit ciphertext
// ("vault:v3:..."); 0 if it is not one.
func VaultVersion(ct []byte) int {
	rest, ok := bytes.CutPrefix(ct, []byte("vault:v"))
	if !ok {
		return 0
	}
	n, _, _ := strings.Cut(string(rest[:min(len(rest), 12)]), ":")
	v, err := strconv.Atoi(n)
	if err != nil {
		return 0
	}
	return v
}

// Rotator is a KEK that can rotate: a new version wraps from then on, and
// every older version still unwraps until it is retired.
type Rotator interface {
	Rotate(ctx context.Context) (KEKInfo, error)
	// VersionOf names the version that made a KEK ciphertext (0: unknown).
	VersionOf(ct []byte) int
}
