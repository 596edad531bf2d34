package main

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentvault/agentvault/internal/apitest"
	"github.com/agentvault/agentvault/internal/vaulttest"
)

// TestScenarios runs every scenario briefly against the real handler (and
// the real dev Vault for transit): each must make requests, all of them
// successful, and count values per request as it says.
func TestScenarios(t *testing.T) {
	url := apitest.Start(t, apitest.Options{})
	dv := vaulttest.Start(t)
	tests := []struct {
		scenario string
		batch    int
		values   int // values per request
	}{
		{"create", 0, 1},
		{"batch", 50, 50},
		{"read", 0, 1},
		{"schema", 0, 1},
		{"agent-read", 0, 1},
		{"page", 0, 100},
		{"search", 0, 1},
		{"mcp-read", 0, 1},
		{"mcp-detokenize", 0, 1},
		{"detokenize", 5, 5},
		{"transit", 0, 1},
		{"redact", 0, 8},
		{"restore", 0, 8},
	}
	for _, tc := range tests {
		t.Run(tc.scenario, func(t *testing.T) {
			res, err := run(config{
				url: url, token: apitest.AdminToken, scenario: tc.scenario, batch: tc.batch, records: 2500,
				vaultAddr: dv.Addr, vaultToken: dv.Token,
				clients: 4, duration: 300 * time.Millisecond, serverPID: os.Getpid(),
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.Requests == 0 || res.Errors != 0 {
				t.Fatalf("%d requests, %d errors (first: %s)", res.Requests, res.Errors, res.FirstErrorMsg)
			}
			if got, want := res.ValuesPerS, res.RequestsPerS*float64(tc.values); got != want {
				t.Errorf("values/s = %v, want %v", got, want)
			}
			if res.P50Millis <= 0 || res.P99Millis < res.P50Millis {
				t.Errorf("p50 %v ms, p99 %v ms", res.P50Millis, res.P99Millis)
			}
			if res.ClientCPUMicros <= 0 || res.ServerCPUMicros <= 0 {
				t.Errorf("CPU per request: server %v µs, client %v µs", res.ServerCPUMicros, res.ClientCPUMicros)
			}
		})
	}
}

func TestSetupErrors(t *testing.T) {
	url := apitest.Start(t, apitest.Options{})
	tests := []struct {
		name string
		c    config
		want string
	}{
		{"wrong admin token", config{url: url, token: "not-the-token", scenario: "create"}, "create collection"},
		{"unknown scenario", config{url: url, token: apitest.AdminToken, scenario: "nope"}, "unknown scenario"},
		{"transit without Vault", config{url: url, token: apitest.AdminToken, scenario: "transit"}, "-vault-addr"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.c.clients, tc.c.duration = 1, 50*time.Millisecond
			_, err := run(tc.c)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

// TestTLS drives an https server: with -ca-file it trusts the server's
// certificate, without it setup fails on the unknown authority.
func TestTLS(t *testing.T) {
	url, cert := apitest.StartTLS(t, apitest.Options{})
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, cert, 0o600); err != nil {
		t.Fatal(err)
	}
	c := config{url: url, token: apitest.AdminToken, scenario: "create", clients: 2, duration: 200 * time.Millisecond, caFile: ca}
	res, err := run(c)
	if err != nil || res.Requests == 0 || res.Errors != 0 {
		t.Fatalf("over TLS with -ca-file: %+v, %v", res, err)
	}
	c.caFile = ""
	if _, err := run(c); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("without -ca-file: %v, want a certificate error", err)
	}
	c.caFile = filepath.Join(t.TempDir(), "missing.pem")
	if _, err := run(c); err == nil || !strings.Contains(err.Error(), "-ca-file") {
		t.Fatalf("missing -ca-file: %v", err)
	}
}

// TestWrkPlans sets each wrk scenario up against the real handler (and
// the dev Vault for transit) and sends every request of its plan, as its
// Lua script has wrk send them: each must succeed. The script names each
// header in a Lua long string spaced from the index brackets ("[[" would
// open a long string: wrk once refused such a script).
func TestWrkPlans(t *testing.T) {
	url := apitest.Start(t, apitest.Options{})
	dv := vaulttest.Start(t)
	client := &http.Client{Timeout: 30 * time.Second}
	for _, tc := range []struct {
		scenario string
		batch    int
	}{{"transit", 0}, {"create", 0}, {"batch", 20}, {"schema", 0}, {"read", 0}, {"agent-read", 0}, {"detokenize", 1}} {
		t.Run(tc.scenario, func(t *testing.T) {
			c := config{url: url, token: apitest.AdminToken, scenario: tc.scenario, batch: tc.batch, vaultAddr: dv.Addr, vaultToken: dv.Token}
			p, err := wrkPlanFor(c)
			if err != nil {
				t.Fatal(err)
			}
			base := url
			if tc.scenario == "transit" {
				base = dv.Addr
			}
			for i := range max(len(p.paths), len(p.bodies)) {
				var body io.Reader
				if len(p.bodies) > 0 {
					body = bytes.NewReader(p.bodies[i%len(p.bodies)])
				}
				req, _ := http.NewRequest(p.method, base+p.paths[i%len(p.paths)], body)
				req.Header.Set(p.header, p.auth)
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode/100 != 2 {
					t.Fatalf("%s %s: %d", p.method, p.paths[i%len(p.paths)], resp.StatusCode)
				}
			}
			lua := p.lua()
			if !strings.Contains(lua, "wrk.headers[ [==["+p.header+"]==] ]") || strings.Contains(lua, "[[") {
				t.Fatalf("script's header line:\n%s", lua)
			}
		})
	}
	if _, err := wrkPlanFor(config{url: url, token: apitest.AdminToken, scenario: "page"}); err == nil {
		t.Fatal("a wrk plan for a scenario without one")
	}
}
