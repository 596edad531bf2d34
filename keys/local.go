package keys

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/insecurecleartextkeyset"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/tink"
)

// LocalKEK is the development KEK: a Tink AES-256-GCM keyset kept in
// cleartext in a file (mode 0600) beside the data. Anyone who can read that
// file can unwrap every key, so it protects only against someone who holds
// a copy of the database without the file. It exists so `serve` works with
// no Vault; production uses VaultKEK.
type LocalKEK struct {
	path  string
	rotMu sync.Mutex // serialises rotations
	mu    sync.RWMutex
	h     *keyset.Handle
	aead  tink.AEAD
}

// OpenLocalKEK loads the KEK keyset at path, creating it on first use.
func OpenLocalKEK(path string) (*LocalKEK, error) {
	k := &LocalKEK{path: path}
	f, err := os.Open(path)
	switch {
	case err == nil:
		defer f.Close()
		h, err := insecurecleartextkeyset.Read(keyset.NewJSONReader(f))
		if err != nil {
			return nil, fmt.Errorf("read local KEK %s: %w", path, err)
		}
		return k, k.set(h)
	case errors.Is(err, fs.ErrNotExist):
		h, err := keyset.NewHandle(aead.AES256GCMKeyTemplate())
		if err != nil {
			return nil, fmt.Errorf("generate local KEK: %w", err)
		}
		if err := writeKeysetFile(path, h); err != nil {
			return nil, err
		}
		return k, k.set(h)
	default:
		return nil, fmt.Errorf("open local KEK: %w", err)
	}
}

func writeKeysetFile(path string, h *keyset.Handle) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write local KEK: %w", err)
	}
	if err := insecurecleartextkeyset.Write(h, keyset.NewJSONWriter(f)); err != nil {
		f.Close()
		return fmt.Errorf("write local KEK: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync local KEK: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close local KEK: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("install local KEK: %w", err)
	}
	// The rename is durable only once the directory is: without this a
	// crash could leave the data wrapped by a KEK whose file is gone.
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("sync the local KEK's directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync the local KEK's directory: %w", err)
	}
	return nil
}

func (k *LocalKEK) set(h *keyset.Handle) error {
	a, err := aead.New(h)
	if err != nil {
		return fmt.Errorf("local KEK primitive: %w", err)
	}
	k.mu.Lock()
	k.h, k.aead = h, a
	k.mu.Unlock()
	return nil
}

// Encrypt wraps plaintext under the current primary key.
func (k *LocalKEK) Encrypt(plaintext, associatedData []byte) ([]byte, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.aead.Encrypt(plaintext, associatedData)
}

// Decrypt unwraps ciphertext made by any key still in the keyset.
func (k *LocalKEK) Decrypt(ciphertext, associatedData []byte) ([]byte, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.aead.Decrypt(ciphertext, associatedData)
}

// Check reports whether the keyset file is still readable.
func (k *LocalKEK) Check(context.Context) error {
	if _, err := os.Stat(k.path); err != nil {
		return fmt.Errorf("%w: local KEK: %v", ErrKMSUnavailable, err)
	}
	return nil
}

// Describe names the local provider and the number of keys in the keyset,
// which is the version new wraps use (1 until the first rotation).
func (k *LocalKEK) Describe(context.Context) (KEKInfo, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return KEKInfo{Provider: "local", Key: k.path, Version: k.h.Len(), MinDecryptionVersion: 1}, nil
}

// Rotate adds a new primary key to the local KEK keyset and rewrites the
// file atomically; older keys stay for unwrapping. Version n is the n-th
// key added.
func (k *LocalKEK) Rotate(context.Context) (KEKInfo, error) {
	k.rotMu.Lock()
	defer k.rotMu.Unlock()
	k.mu.RLock()
	m := keyset.NewManagerFromHandle(k.h)
	k.mu.RUnlock()
	id, err := m.Add(aead.AES256GCMKeyTemplate())
	if err != nil {
		return KEKInfo{}, fmt.Errorf("rotate local KEK: %w", err)
	}
	if err := m.SetPrimary(id); err != nil {
		return KEKInfo{}, fmt.Errorf("rotate local KEK: %w", err)
	}
	h, err := m.Handle()
	if err != nil {
		return KEKInfo{}, err
	}
	if err := writeKeysetFile(k.path, h); err != nil {
		return KEKInfo{}, err
	}
	if err := k.set(h); err != nil {
		return KEKInfo{}, err
	}
	return k.Describe(context.Background())
}

// VersionOf names the position (1-based) of the key that made ct.
func (k *LocalKEK) VersionOf(ct []byte) int {
	id, ok := KeyID(ct)
	if !ok {
		return 0
	}
	k.mu.RLock()
	defer k.mu.RUnlock()
	for i, ki := range k.h.KeysetInfo().GetKeyInfo() {
		if ki.GetKeyId() == id {
			return i + 1
		}
	}
	return 0
}
