package keys_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/agentvault/agentvault/internal/vaulttest"
	"github.com/agentvault/agentvault/keys"
)

// exerciseKEK checks what every KEK must do: keysets wrapped under it open
// again (also through a second, freshly opened KEK on the same key, as
// after a restart), and only under the scope they were wrapped for.
func exerciseKEK(t *testing.T, kek, reopened keys.KEK) {
	t.Helper()
	m := keys.NewManager(kek)
	dek, err := m.NewDataKey()
	if err != nil {
		t.Fatal(err)
	}
	wrapped, err := m.WrapDataKey(dek, "dek/payroll")
	if err != nil {
		t.Fatalf("wrap: %v", err)
	}
	ad := []byte("payroll\x00rec\x00salary")
	ct, err := dek.Encrypt([]byte(`"123456"`), ad)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(ct, []byte("123456")) {
		t.Fatal("ciphertext contains the plaintext")
	}
	for name, mgr := range map[string]*keys.Manager{"same KEK": m, "reopened KEK": keys.NewManager(reopened)} {
		got, err := mgr.OpenDataKey(wrapped, "dek/payroll")
		if err != nil {
			t.Fatalf("%s: unwrap: %v", name, err)
		}
		pt, err := got.Decrypt(ct, ad)
		if err != nil || string(pt) != `"123456"` {
			t.Fatalf("%s: decrypt after unwrap = %q, %v", name, pt, err)
		}
		if _, err := got.Decrypt(ct, []byte("payroll\x00other\x00salary")); !errors.Is(err, keys.ErrDecrypt) {
			t.Fatalf("%s: decrypt with another record's associated data: %v, want ErrDecrypt", name, err)
		}
	}
	if _, err := m.OpenDataKey(wrapped, "dek/other"); err == nil {
		t.Fatal("a DEK wrapped for one collection opened as another's")
	}
	if _, err := m.OpenIndexKey(wrapped, "dek/payroll"); err == nil {
		t.Fatal("a data keyset opened as an index keyset")
	}
	tampered := bytes.Clone(wrapped)
	tampered[len(tampered)/2] ^= 1
	if _, err := m.OpenDataKey(tampered, "dek/payroll"); err == nil {
		t.Fatal("a tampered wrapped keyset opened")
	}

	idx, err := m.NewIndexKey()
	if err != nil {
		t.Fatal(err)
	}
	wi, err := m.WrapIndexKey(idx, "idx/payroll")
	if err != nil {
		t.Fatal(err)
	}
	idx2, err := keys.NewManager(reopened).OpenIndexKey(wi, "idx/payroll")
	if err != nil {
		t.Fatal(err)
	}
	a, _ := idx.Compute([]byte("x"), 16)
	b, _ := idx2.Compute([]byte("x"), 16)
	if !bytes.Equal(a, b) {
		t.Fatal("index key computes differently after unwrap")
	}
}

func TestLocalKEK(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "dev-kek.json")
	kek, err := keys.OpenLocalKEK(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("local KEK file mode %v, want 0600", st.Mode().Perm())
	}
	reopened, err := keys.OpenLocalKEK(path)
	if err != nil {
		t.Fatal(err)
	}
	exerciseKEK(t, kek, reopened)

	other, err := keys.OpenLocalKEK(filepath.Join(t.TempDir(), "other.json"))
	if err != nil {
		t.Fatal(err)
	}
	w, _ := keys.NewManager(kek).WrapDataKey(mustDEK(t, kek), "dek/x")
	if _, err := keys.NewManager(other).OpenDataKey(w, "dek/x"); err == nil {
		t.Fatal("a keyset opened under a different KEK")
	}
	info, _ := kek.Describe(context.Background())
	if info.Provider != "local" || info.Version != 1 {
		t.Errorf("Describe = %+v", info)
	}
}

func mustDEK(t *testing.T, kek keys.KEK) *keys.DataKey {
	d, err := keys.NewManager(kek).NewDataKey()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestVaultKEK runs the KEK path against the real Vault server: the Transit
// key is created on first use, keysets wrap and unwrap, a fresh connection
// (a restarted agentvault) unwraps what the first wrapped, and a stopped
// Vault is reported as ErrKMSUnavailable.
func TestVaultKEK(t *testing.T) {
	t.Parallel()
	v := vaulttest.Start(t)
	ctx := context.Background()
	cfg := keys.VaultConfig{Addr: v.Addr, Token: v.Token, Key: "agentvault-test", Timeout: 3 * time.Second}
	kek, err := keys.OpenVaultKEK(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	sec, err := v.Client(t).Logical().Read("transit/keys/agentvault-test")
	if err != nil || sec == nil {
		t.Fatalf("transit key was not created: %v", err)
	}
	reopened, err := keys.OpenVaultKEK(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	exerciseKEK(t, kek, reopened)
	info, err := kek.Describe(ctx)
	if err != nil || info.Provider != "vault-transit" || info.Version != 1 {
		t.Fatalf("Describe = %+v, %v", info, err)
	}
	if err := kek.Check(ctx); err != nil {
		t.Fatalf("Check with Vault up: %v", err)
	}

	if _, err := keys.OpenVaultKEK(ctx, keys.VaultConfig{Addr: v.Addr, Token: "wrong-token", Timeout: time.Second}); err == nil {
		t.Fatal("opened a Vault KEK with a wrong token")
	}

	v.Stop()
	if err := kek.Check(ctx); !errors.Is(err, keys.ErrKMSUnavailable) {
		t.Fatalf("Check with Vault stopped = %v, want ErrKMSUnavailable", err)
	}
	if _, err := keys.NewManager(kek).WrapDataKey(mustDEK(t, kek), "dek/x"); !errors.Is(err, keys.ErrKMSUnavailable) {
		t.Fatalf("wrap with Vault stopped = %v, want ErrKMSUnavailable", err)
	}
}
