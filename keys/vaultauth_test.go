package keys_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/agentvault/agentvault/internal/vaulttest"
	"github.com/agentvault/agentvault/keys"
)

const transitPolicy = `
path "transit/keys/*" { capabilities = ["create", "read", "update"] }
path "transit/encrypt/*" { capabilities = ["update"] }
path "transit/decrypt/*" { capabilities = ["update"] }
`

// keepsWorking wraps and unwraps a keyset every half second for d: the
// KEK must answer every time.
func keepsWorking(t *testing.T, kek *keys.VaultKEK, d time.Duration) {
	t.Helper()
	m := keys.NewManager(kek)
	dek := mustDEK(t, kek)
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		w, err := m.WrapDataKey(dek, "dek/renewal")
		if err == nil {
			_, err = m.OpenDataKey(w, "dek/renewal")
		}
		if err != nil {
			t.Fatalf("the KEK stopped working: %v", err)
		}
	}
	if ttl, ok := kek.TokenTTL(); !ok || ttl <= 0 {
		t.Fatalf("token TTL %v, %v: want a live, expiring token", ttl, ok)
	}
}

// TestVaultTokenIsRenewed: a renewable token of 4 s TTL (as most logins
// hand out) keeps the KEK working for several of its TTLs.
func TestVaultTokenIsRenewed(t *testing.T) {
	t.Parallel()
	v := vaulttest.Start(t)
	root := v.Client(t)
	if err := root.Sys().PutPolicy("agentvault", transitPolicy); err != nil {
		t.Fatal(err)
	}
	tok, err := root.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"agentvault"}, TTL: "4s", ExplicitMaxTTL: "10m"})
	if err != nil {
		t.Fatal(err)
	}
	kek, err := keys.OpenVaultKEK(context.Background(), keys.VaultConfig{Addr: v.Addr, Token: tok.Auth.ClientToken, Key: "renewed", Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kek.Close)
	keepsWorking(t, kek, 14*time.Second)
}

// TestVaultAppRoleLogsInAgain: with AppRole, a token that reaches its max
// TTL (8 s) is replaced by a new login, and the KEK keeps working; a
// secret id Vault refuses fails at open.
func TestVaultAppRoleLogsInAgain(t *testing.T) {
	t.Parallel()
	v := vaulttest.Start(t)
	root := v.Client(t)
	if err := root.Sys().EnableAuthWithOptions("approle", &api.EnableAuthOptions{Type: "approle"}); err != nil {
		t.Fatal(err)
	}
	if err := root.Sys().PutPolicy("agentvault", transitPolicy); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Logical().Write("auth/approle/role/agentvault", map[string]any{
		"token_policies": "agentvault", "token_ttl": "3s", "token_max_ttl": "8s",
	}); err != nil {
		t.Fatal(err)
	}
	rid, err := root.Logical().Read("auth/approle/role/agentvault/role-id")
	if err != nil {
		t.Fatal(err)
	}
	sid, err := root.Logical().Write("auth/approle/role/agentvault/secret-id", nil)
	if err != nil {
		t.Fatal(err)
	}
	secretFile := filepath.Join(t.TempDir(), "secret-id")
	os.WriteFile(secretFile, []byte(sid.Data["secret_id"].(string)+"\n"), 0o600)
	auth := keys.VaultAuth{Method: keys.AuthAppRole, RoleID: rid.Data["role_id"].(string), SecretIDFile: secretFile}
	kek, err := keys.OpenVaultKEK(context.Background(), keys.VaultConfig{Addr: v.Addr, Key: "approle", Auth: auth, Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kek.Close)
	keepsWorking(t, kek, 20*time.Second)

	badFile := filepath.Join(t.TempDir(), "bad")
	os.WriteFile(badFile, []byte("00000000-0000-0000-0000-000000000000"), 0o600)
	auth.SecretIDFile = badFile
	_, err = keys.OpenVaultKEK(context.Background(), keys.VaultConfig{Addr: v.Addr, Key: "approle", Auth: auth, Timeout: 3 * time.Second})
	if err == nil || errors.Is(err, keys.ErrKMSUnavailable) {
		t.Fatalf("open with a refused secret id: %v", err)
	}
}

// TestVaultDownAtOpen: a Vault that is not there yet does not stop the
// KEK from opening; it answers ErrKMSUnavailable, then works on its own
// once Vault starts.
func TestVaultDownAtOpen(t *testing.T) {
	t.Parallel()
	addr := vaulttest.FreeAddr(t)
	const token = "av-test-token-before-vault"
	kek, err := keys.OpenVaultKEK(context.Background(), keys.VaultConfig{Addr: "http://" + addr, Token: token, Key: "late", Timeout: time.Second})
	if err != nil {
		t.Fatalf("open with Vault down: %v", err)
	}
	t.Cleanup(kek.Close)
	if err := kek.Check(context.Background()); !errors.Is(err, keys.ErrKMSUnavailable) {
		t.Fatalf("Check with Vault down = %v", err)
	}
	if _, err := keys.NewManager(kek).WrapDataKey(mustDEK(t, kek), "dek/x"); !errors.Is(err, keys.ErrKMSUnavailable) {
		t.Fatalf("wrap with Vault down = %v", err)
	}
	vaulttest.StartAt(t, addr, token)
	deadline := time.Now().Add(30 * time.Second)
	for kek.Check(context.Background()) != nil {
		if time.Now().After(deadline) {
			t.Fatal("the KEK did not become ready after Vault started")
		}
		time.Sleep(200 * time.Millisecond)
	}
	keepsWorkingBriefly(t, kek)
}

func keepsWorkingBriefly(t *testing.T, kek keys.KEK) {
	t.Helper()
	m := keys.NewManager(kek)
	w, err := m.WrapDataKey(mustDEK(t, kek), "dek/late")
	if err == nil {
		_, err = m.OpenDataKey(w, "dek/late")
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestVaultKubernetesLoginRequest: Vault's Kubernetes auth method reviews
// the pod's token with a Kubernetes API server, which this machine cannot
// run, so this test stands in for Vault's login endpoint (a stand-in named
// as such, not a Vault) and checks what agentvault sends and does with the
// answer: the role and the service-account JWT, read from its file, to
// auth/<mount>/login; the token it gets back is the one it uses.
func TestVaultKubernetesLoginRequest(t *testing.T) {
	t.Parallel()
	jwtFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(jwtFile, []byte("eyJhbGciOi.service-account.jwt\n"), 0o600)
	type call struct {
		path, token string
		body        map[string]any
	}
	calls := make(chan call, 16)
	standIn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		json.NewDecoder(r.Body).Decode(&body)
		calls <- call{r.URL.Path, r.Header.Get("X-Vault-Token"), body}
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.URL.Path == "/v1/auth/k8s-prod/login":
			io.WriteString(w, `{"auth":{"client_token":"hvs.from-k8s-login","lease_duration":3600,"renewable":true}}`)
		case strings.HasPrefix(r.URL.Path, "/v1/transit/keys/"):
			io.WriteString(w, `{"data":{"latest_version":1,"min_decryption_version":1}}`)
		default:
			w.WriteHeader(404)
			io.WriteString(w, `{"errors":[]}`)
		}
	}))
	t.Cleanup(standIn.Close)
	auth := keys.VaultAuth{Method: keys.AuthKubernetes, Mount: "k8s-prod", Role: "agentvault", JWTFile: jwtFile}
	kek, err := keys.OpenVaultKEK(context.Background(), keys.VaultConfig{Addr: standIn.URL, Key: "k", Auth: auth, Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kek.Close)
	login := <-calls
	if login.path != "/v1/auth/k8s-prod/login" || login.body["role"] != "agentvault" || login.body["jwt"] != "eyJhbGciOi.service-account.jwt" || login.token != "" {
		t.Fatalf("login request: %+v", login)
	}
	if next := <-calls; next.token != "hvs.from-k8s-login" {
		t.Fatalf("the call after login used token %q", next.token)
	}
	if ttl, ok := kek.TokenTTL(); !ok || ttl < 59*time.Minute {
		t.Fatalf("token TTL %v %v", ttl, ok)
	}
	// Without the role, or with an unknown method, it does not open.
	for _, a := range []keys.VaultAuth{{Method: keys.AuthKubernetes}, {Method: "ldap"}, {Method: keys.AuthAppRole, RoleID: "x"}} {
		if _, err := keys.OpenVaultKEK(context.Background(), keys.VaultConfig{Addr: standIn.URL, Auth: a}); err == nil {
			t.Errorf("opened with %+v", a)
		}
	}
}
