package keys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/tink-crypto/tink-go-hcvault/v2/integration/hcvault"
	"github.com/tink-crypto/tink-go/v2/tink"
)

// VaultConfig says where the KEK lives in Vault Transit.
type VaultConfig struct {
	Addr    string        // VAULT_ADDR
	Token   string        // VAULT_TOKEN; never logged
	Mount   string        // Transit mount path, default "transit"
	Key     string        // Transit key name, default "agentvault"
	Timeout time.Duration // per request, default 10s
}

// VaultKEK is a KEK held in HashiCorp Vault Transit. Wrapping and
// unwrapping go through Tink's HashiCorp Vault AEAD; the key never leaves
// Vault. It is called only when a keyset is created, opened or rewrapped,
// never on the per-record path.
type VaultKEK struct {
	client  *api.Client
	mount   string
	key     string
	remote  tink.AEAD
	keyPath string
}

// OpenVaultKEK connects to Vault and makes sure the Transit key exists
// (creating an aes256-gcm96 key if it does not).
func OpenVaultKEK(ctx context.Context, cfg VaultConfig) (*VaultKEK, error) {
	if cfg.Addr == "" {
		return nil, errors.New("vault KEK: VAULT_ADDR is not set")
	}
	if cfg.Token == "" {
		return nil, errors.New("vault KEK: VAULT_TOKEN is not set")
	}
	if cfg.Mount == "" {
		cfg.Mount = "transit"
	}
	if cfg.Key == "" {
		cfg.Key = "agentvault"
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	cfg.Mount = strings.Trim(cfg.Mount, "/")
	vc := api.DefaultConfig()
	vc.Address = cfg.Addr
	vc.Timeout = cfg.Timeout
	vc.MaxRetries = 2
	client, err := api.NewClient(vc)
	if err != nil {
		return nil, fmt.Errorf("vault client: %w", err)
	}
	client.SetToken(cfg.Token)
	keyPath := "/" + cfg.Mount + "/keys/" + cfg.Key
	remote, err := hcvault.NewAEAD(keyPath, client.Logical())
	if err != nil {
		return nil, fmt.Errorf("vault AEAD for %s: %w", keyPath, err)
	}
	k := &VaultKEK{client: client, mount: cfg.Mount, key: cfg.Key, remote: remote, keyPath: keyPath}
	if err := k.ensureKey(ctx); err != nil {
		return nil, err
	}
	return k, nil
}

func (k *VaultKEK) ensureKey(ctx context.Context) error {
	s, err := k.client.Logical().ReadWithContext(ctx, k.mount+"/keys/"+k.key)
	if err != nil {
		return classifyVaultErr("read transit key", err)
	}
	if s != nil {
		return nil
	}
	_, err = k.client.Logical().WriteWithContext(ctx, k.mount+"/keys/"+k.key, map[string]any{"type": "aes256-gcm96"})
	if err != nil {
		return classifyVaultErr("create transit key", err)
	}
	return nil
}

// Encrypt wraps plaintext with the Transit key's latest version.
func (k *VaultKEK) Encrypt(plaintext, associatedData []byte) ([]byte, error) {
	ct, err := k.remote.Encrypt(plaintext, associatedData)
	if err != nil {
		return nil, classifyVaultErr("transit encrypt", err)
	}
	return ct, nil
}

// Decrypt unwraps ciphertext with whichever Transit key version made it.
func (k *VaultKEK) Decrypt(ciphertext, associatedData []byte) ([]byte, error) {
	pt, err := k.remote.Decrypt(ciphertext, associatedData)
	if err != nil {
		return nil, classifyVaultErr("transit decrypt", err)
	}
	return pt, nil
}

// Check reads the Transit key's metadata: Vault is up, unsealed, the token
// is valid and the key exists.
func (k *VaultKEK) Check(ctx context.Context) error {
	_, err := k.Describe(ctx)
	return err
}

// Describe reads the Transit key's latest version from Vault.
func (k *VaultKEK) Describe(ctx context.Context) (KEKInfo, error) {
	s, err := k.client.Logical().ReadWithContext(ctx, k.mount+"/keys/"+k.key)
	if err != nil {
		return KEKInfo{}, classifyVaultErr("read transit key", err)
	}
	if s == nil {
		return KEKInfo{}, fmt.Errorf("%w: transit key %s/%s is missing", ErrKMSUnavailable, k.mount, k.key)
	}
	v, err := jsonInt(s.Data["latest_version"])
	if err != nil {
		return KEKInfo{}, fmt.Errorf("transit key latest_version: %w", err)
	}
	minDec, err := jsonInt(s.Data["min_decryption_version"])
	if err != nil {
		return KEKInfo{}, fmt.Errorf("transit key min_decryption_version: %w", err)
	}
	return KEKInfo{Provider: "vault-transit", Key: k.mount + "/keys/" + k.key, Version: v, MinDecryptionVersion: minDec}, nil
}

// Rotate adds a new version to the Transit key in Vault: new wraps use it;
// older versions unwrap until min_decryption_version passes them. The
// Vault token needs update on <mount>/keys/<key>/rotate.
func (k *VaultKEK) Rotate(ctx context.Context) (KEKInfo, error) {
	if _, err := k.client.Logical().WriteWithContext(ctx, k.mount+"/keys/"+k.key+"/rotate", nil); err != nil {
		return KEKInfo{}, classifyVaultErr("rotate transit key", err)
	}
	return k.Describe(ctx)
}

// VersionOf reads the Transit key version from a ciphertext.
func (k *VaultKEK) VersionOf(ct []byte) int { return VaultVersion(ct) }

func jsonInt(v any) (int, error) {
	switch n := v.(type) {
	case json.Number:
		i, err := n.Int64()
		return int(i), err
	case float64:
		return int(n), nil
	case int:
		return n, nil
	}
	return 0, fmt.Errorf("unexpected type %T", v)
}

// classifyVaultErr marks transport failures and server-side errors as
// ErrKMSUnavailable; a 4xx answer (bad ciphertext, denied) stays a plain
// error so callers do not retry what cannot succeed.
func classifyVaultErr(op string, err error) error {
	var re *api.ResponseError
	if errors.As(err, &re) && re.StatusCode < http.StatusInternalServerError {
		return fmt.Errorf("%s: vault answered %d", op, re.StatusCode)
	}
	return fmt.Errorf("%w: %s: %v", ErrKMSUnavailable, op, err)
}
