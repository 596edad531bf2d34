package keys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/tink-crypto/tink-go-hcvault/v2/integration/hcvault"
	"github.com/tink-crypto/tink-go/v2/tink"
)

// VaultConfig says where the KEK lives in Vault Transit and how to log in.
// The client also honours Vault's usual environment: VAULT_CACERT (and
// VAULT_CAPATH, VAULT_CLIENT_CERT, VAULT_CLIENT_KEY, VAULT_TLS_SERVER_NAME)
// and VAULT_NAMESPACE.
type VaultConfig struct {
	Addr    string        // VAULT_ADDR
	Token   string        // VAULT_TOKEN, for the token method; never logged
	Mount   string        // Transit mount path, default "transit"
	Key     string        // Transit key name, default "agentvault"
	Timeout time.Duration // per request, default 10s
	Auth    VaultAuth     // how to log in; the zero value is the token method
	Logger  *slog.Logger  // token renewals, logins and retries; nil discards
}

// VaultKEK is a KEK held in HashiCorp Vault Transit. Wrapping and
// unwrapping go through Tink's HashiCorp Vault AEAD; the key never leaves
// Vault. It is called only when a keyset is created, opened or rewrapped,
// never on the per-record path.
//
// It keeps itself usable: its Vault token is renewed while renewable and
// replaced by a new login when it is not (AppRole, Kubernetes); a Vault
// that cannot be reached when it opens is retried in the background, with
// backoff, while every call answers ErrKMSUnavailable. Close stops that.
type VaultKEK struct {
	client  *api.Client
	mount   string
	key     string
	remote  tink.AEAD
	keyPath string
	auth    VaultAuth
	log     *slog.Logger

	keyReady atomic.Bool  // the Transit key is known to exist
	expiry   atomic.Int64 // token expiry, Unix ns; 0: none (or not known yet)
	loggedIn atomic.Bool  // a token is set (token method: always)
	stop     context.CancelFunc
	done     chan struct{}
}

// OpenVaultKEK connects to Vault, logs in, and makes sure the Transit key
// exists (creating an aes256-gcm96 key if it does not). A Vault that does
// not answer is not an error: the KEK opens unready and keeps trying, so
// the server starts and reports it (readiness). Refused credentials are an
// error: retrying cannot fix them.
func OpenVaultKEK(ctx context.Context, cfg VaultConfig) (*VaultKEK, error) {
	if cfg.Addr == "" {
		return nil, errors.New("vault KEK: VAULT_ADDR is not set")
	}
	if err := cfg.Auth.check(cfg.Token); err != nil {
		return nil, err
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
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Mount = strings.Trim(cfg.Mount, "/")
	vc := api.DefaultConfig() // reads VAULT_CACERT and the other TLS variables
	if vc.Error != nil {
		return nil, fmt.Errorf("vault client configuration: %w", vc.Error)
	}
	vc.Address = cfg.Addr
	vc.Timeout = cfg.Timeout
	vc.MaxRetries = 2
	client, err := api.NewClient(vc) // reads VAULT_NAMESPACE
	if err != nil {
		return nil, fmt.Errorf("vault client: %w", err)
	}
	client.ClearToken()
	keyPath := "/" + cfg.Mount + "/keys/" + cfg.Key
	remote, err := hcvault.NewAEAD(keyPath, client.Logical())
	if err != nil {
		return nil, fmt.Errorf("vault AEAD for %s: %w", keyPath, err)
	}
	k := &VaultKEK{client: client, mount: cfg.Mount, key: cfg.Key, remote: remote, keyPath: keyPath, auth: cfg.Auth, log: cfg.Logger, done: make(chan struct{})}
	if cfg.Auth.method() == AuthToken {
		client.SetToken(cfg.Token)
		k.loggedIn.Store(true)
	}
	// One attempt now: refused credentials fail the start, an outage does not.
	secret, err := k.login(ctx)
	if err == nil {
		err = k.ensureKey(ctx)
	}
	if err != nil && !errors.Is(err, ErrKMSUnavailable) {
		return nil, err
	}
	if err != nil {
		k.log.Warn("Vault unreachable: the KEK is unavailable until it answers; retrying in the background", "err", err)
	}
	bg, cancel := context.WithCancel(context.Background())
	k.stop = cancel
	go k.maintain(bg, secret)
	return k, nil
}

// Close stops renewing the token and retrying.
func (k *VaultKEK) Close() {
	k.stop()
	<-k.done
}

// TokenTTL is how long the current Vault token has left; ok is false when
// it does not expire (or no login has succeeded yet).
func (k *VaultKEK) TokenTTL() (ttl time.Duration, ok bool) {
	e := k.expiry.Load()
	if e == 0 {
		return 0, false
	}
	return time.Until(time.Unix(0, e)), true
}

func (k *VaultKEK) ensureKey(ctx context.Context) error {
	s, err := k.client.Logical().ReadWithContext(ctx, k.mount+"/keys/"+k.key)
	if err != nil {
		return classifyVaultErr("read transit key", err)
	}
	if s == nil {
		_, err = k.client.Logical().WriteWithContext(ctx, k.mount+"/keys/"+k.key, map[string]any{"type": "aes256-gcm96"})
		if err != nil {
			return classifyVaultErr("create transit key", err)
		}
	}
	k.keyReady.Store(true)
	return nil
}

// ready fails while no login has succeeded: every call would be refused.
func (k *VaultKEK) ready() error {
	if !k.loggedIn.Load() {
		return fmt.Errorf("%w: not logged in to Vault yet", ErrKMSUnavailable)
	}
	return nil
}

// Encrypt wraps plaintext with the Transit key's latest version.
func (k *VaultKEK) Encrypt(plaintext, associatedData []byte) ([]byte, error) {
	if err := k.ready(); err != nil {
		return nil, err
	}
	ct, err := k.remote.Encrypt(plaintext, associatedData)
	if err != nil {
		return nil, classifyVaultErr("transit encrypt", err)
	}
	return ct, nil
}

// Decrypt unwraps ciphertext with whichever Transit key version made it.
func (k *VaultKEK) Decrypt(ciphertext, associatedData []byte) ([]byte, error) {
	if err := k.ready(); err != nil {
		return nil, err
	}
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
	if err := k.ready(); err != nil {
		return KEKInfo{}, err
	}
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

// classifyVaultErr marks transport failures, server-side errors and a
// refused token (401, 403: expired, revoked, or short of policy; the next
// login may fix it) as ErrKMSUnavailable; another 4xx answer (a ciphertext
// that does not open) stays a plain error so callers do not retry what
// cannot succeed.
func classifyVaultErr(op string, err error) error {
	var re *api.ResponseError
	if errors.As(err, &re) && re.StatusCode < http.StatusInternalServerError &&
		re.StatusCode != http.StatusUnauthorized && re.StatusCode != http.StatusForbidden {
		return fmt.Errorf("%s: vault answered %d", op, re.StatusCode)
	}
	return fmt.Errorf("%w: %s: %v", ErrKMSUnavailable, op, err)
}
