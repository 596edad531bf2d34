package keys_test

import (
	"path/filepath"
	"testing"

	"github.com/agentvault/agentvault/keys"
)

func benchManager(b *testing.B) *keys.Manager {
	kek, err := keys.OpenLocalKEK(filepath.Join(b.TempDir(), "kek.json"))
	if err != nil {
		b.Fatal(err)
	}
	return keys.NewManager(kek)
}

// BenchmarkDataKeyEncrypt is the per-value encryption on the write path:
// Tink AES-256-GCM with associated data, on a 16-byte value.
func BenchmarkDataKeyEncrypt(b *testing.B) {
	dek, err := benchManager(b).NewDataKey()
	if err != nil {
		b.Fatal(err)
	}
	pt, ad := []byte(`"value-00000001"`), []byte("agentvault/field/v1\x00bench\x0001a20ebe-6c65-71f8-8fbd-08759904423e\x00secret")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := dek.Encrypt(pt, ad); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDataKeyDecrypt is the per-value decryption on the reveal path.
func BenchmarkDataKeyDecrypt(b *testing.B) {
	dek, err := benchManager(b).NewDataKey()
	if err != nil {
		b.Fatal(err)
	}
	ad := []byte("ad")
	ct, _ := dek.Encrypt([]byte(`"value-00000001"`), ad)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := dek.Decrypt(ct, ad); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIndexKeyCompute is the keyed PRF behind deterministic tokens.
func BenchmarkIndexKeyCompute(b *testing.B) {
	idx, err := benchManager(b).NewIndexKey()
	if err != nil {
		b.Fatal(err)
	}
	in := []byte("salary\x00120000")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := idx.Compute(in, 16); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWrapUnwrapLocal wraps and unwraps a data keyset under the local
// KEK (the Vault KEK adds one Transit round trip each way).
func BenchmarkWrapUnwrapLocal(b *testing.B) {
	m := benchManager(b)
	dek, _ := m.NewDataKey()
	b.ReportAllocs()
	for b.Loop() {
		w, err := m.WrapDataKey(dek, "dek/bench")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := m.OpenDataKey(w, "dek/bench"); err != nil {
			b.Fatal(err)
		}
	}
}
