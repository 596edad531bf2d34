package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/agentvault/agentvault/internal/vaulttest"
)

// TestStartsWithVaultDown: the binary starts with Vault not there yet,
// answers /readyz and the calls that need the KEK with 503, and becomes
// ready on its own once Vault starts (as an orchestrator expects: no
// restart loop).
func TestStartsWithVaultDown(t *testing.T) {
	t.Parallel()
	addr := vaulttest.FreeAddr(t)
	const token = "av-e2e-token-vault-later"
	env := append([]string{"VAULT_ADDR=http://" + addr, "VAULT_TOKEN=" + token}, adminEnv...)
	s := start(t, t.TempDir(), env, "--kms", "vault", "--vault-key", "av-late")
	if status, _ := s.call("GET", "/readyz", "", nil); status != 503 {
		t.Fatalf("/readyz with Vault down: %d", status)
	}
	if status, out := s.call("POST", "/v1/collections", admin, hrCollection); status != 503 {
		t.Fatalf("create a collection with Vault down: %d %v", status, out)
	}
	vaulttest.StartAt(t, addr, token)
	waitReady(t, s)
	s.must(201, "POST", "/v1/collections", admin, hrCollection)
	if !strings.Contains(s.logs(), "the KEK is available") {
		t.Fatalf("no log line says the KEK became available:\n%s", s.logs())
	}
}

// TestVaultAppRoleThroughTheBinary: serve logs in with AppRole (role id
// from the environment, secret id from a file), keeps working past the
// token's max TTL, and exposes the token's remaining TTL as a metric.
func TestVaultAppRoleThroughTheBinary(t *testing.T) {
	t.Parallel()
	v := vaulttest.Start(t)
	root := v.Client(t)
	if err := root.Sys().EnableAuthWithOptions("approle", &api.EnableAuthOptions{Type: "approle"}); err != nil {
		t.Fatal(err)
	}
	if err := root.Sys().PutPolicy("agentvault", `path "transit/*" { capabilities = ["create", "read", "update"] }`); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Logical().Write("auth/approle/role/av", map[string]any{"token_policies": "agentvault", "token_ttl": "3s", "token_max_ttl": "6s"}); err != nil {
		t.Fatal(err)
	}
	rid, _ := root.Logical().Read("auth/approle/role/av/role-id")
	sid, err := root.Logical().Write("auth/approle/role/av/secret-id", nil)
	if err != nil || rid == nil {
		t.Fatalf("approle: %v", err)
	}
	secretFile := filepath.Join(t.TempDir(), "secret-id")
	os.WriteFile(secretFile, []byte(sid.Data["secret_id"].(string)), 0o600)
	env := append([]string{"VAULT_ADDR=" + v.Addr, "VAULT_ROLE_ID=" + rid.Data["role_id"].(string)}, adminEnv...)
	s := start(t, t.TempDir(), env, "--kms", "vault", "--vault-key", "av-approle", "--vault-auth", "approle", "--vault-secret-id-file", secretFile)
	s.must(200, "GET", "/readyz", "", nil)
	time.Sleep(14 * time.Second) // past two max TTLs: two new logins
	s.must(201, "POST", "/v1/collections", admin, hrCollection)
	s.must(200, "GET", "/readyz", "", nil)
	resp, err := testHTTP.Get(s.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(m), "agentvault_vault_token_ttl_seconds ") {
		t.Fatal("no token TTL metric")
	}
	if n := strings.Count(s.logs(), "logged in to Vault"); n < 3 {
		t.Fatalf("%d logins in 14 s with a 6 s max TTL, want at least 3", n)
	}
}

func waitReady(t *testing.T, s *server) {
	t.Helper()
	for end := time.Now().Add(60 * time.Second); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		if status, _ := s.call("GET", "/readyz", "", nil); status == 200 {
			return
		}
	}
	t.Fatal("the server did not become ready")
}

// hrCollection is a small schema with one sensitive field: creating it
// wraps a data keyset under the KEK.
var hrCollection = map[string]any{"name": "hr", "fields": []map[string]any{
	{"name": "dept", "type": "string"},
	{"name": "name", "type": "string", "sensitive": true},
}}
