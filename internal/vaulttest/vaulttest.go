// Package vaulttest starts the real dev Vault server (internal/devvault:
// Vault's own core, Transit engine and HTTP handler) for tests.
//
// scripts/test.sh builds the server once, caches the binary, and exports
// AGENTVAULT_DEVVAULT with its path. Without it, tests that need Vault
// skip, unless AGENTVAULT_REQUIRE_VAULT=1 or CI is set, where they fail:
// the README's test command never skips them.
package vaulttest

import (
	"bufio"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// Server is a running dev Vault.
type Server struct {
	Addr  string
	Token string
	cmd   *exec.Cmd
}

// Start launches a fresh, empty dev Vault with transit mounted at
// "transit/" and stops it when the test ends.
func Start(t testing.TB) *Server { return StartAt(t, "127.0.0.1:0", "") }

// StartAt launches one on a given loopback address; with tokenID, its
// Token is a root-policy token with that id, so a client can be handed the
// address and token before the server exists.
func StartAt(t testing.TB, listen, tokenID string) *Server {
	t.Helper()
	bin := os.Getenv("AGENTVAULT_DEVVAULT")
	if bin == "" {
		Missing(t, "AGENTVAULT_REQUIRE_VAULT", "AGENTVAULT_DEVVAULT is not set: the dev Vault is not built; scripts/test.sh builds it and runs this test")
	}
	args := []string{"-listen", listen}
	if tokenID != "" {
		args = append(args, "-token", tokenID)
	}
	cmd := exec.Command(bin, args...)
	stdin, err := cmd.StdinPipe() // closing it stops the server
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start dev Vault: %v", err)
	}
	s := &Server{cmd: cmd}
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	select {
	case line, ok := <-lines:
		if !ok {
			t.Fatal("dev Vault exited before it was ready")
		}
		var info struct{ Addr, Token string }
		if err := json.Unmarshal([]byte(line), &info); err != nil {
			t.Fatalf("dev Vault said %q: %v", line, err)
		}
		s.Addr, s.Token = info.Addr, info.Token
	case <-time.After(60 * time.Second):
		t.Fatal("dev Vault did not start within 60s")
	}
	return s
}

// Client returns an API client with the root token.
func (s *Server) Client(t testing.TB) *api.Client {
	t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address = s.Addr
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(s.Token)
	return c
}

// FreeAddr returns a loopback address no one listens on right now.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Stop kills the server now, to test what happens when Vault goes away.
func (s *Server) Stop() {
	s.cmd.Process.Kill()
}

// Missing stops a test that lacks a real part it needs (the dev Vault, a
// browser, an MCP client, root for a mount): it fails where the whole
// suite must run (the require variable is 1, as scripts/test.sh sets it,
// or CI is set) and is skipped on a developer's machine without the part.
func Missing(t testing.TB, require, why string) {
	t.Helper()
	if os.Getenv(require) == "1" || os.Getenv("CI") != "" {
		t.Fatal(why)
	}
	t.Skip(why)
}
