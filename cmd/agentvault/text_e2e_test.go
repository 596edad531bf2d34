package main

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestRedactRestoreCLI: the pipeline commands through the real binary.
func TestRedactRestoreCLI(t *testing.T) {
	t.Parallel()
	s := start(t, t.TempDir(), adminEnv)
	writer := s.must(201, "POST", "/v1/principals", admin, map[string]any{"name": "app", "roles": []string{"writer"}})["token"].(string)
	agent, agentID := newAgent(s)
	run := func(token, stdin string, args ...string) (string, string) {
		cmd := command(2*time.Minute, avBinary, args...)
		cmd.Env = append(os.Environ(), "AGENTVAULT_URL="+s.url, "AGENTVAULT_TOKEN="+token)
		cmd.Stdin = strings.NewReader(stdin)
		var errb strings.Builder
		cmd.Stderr = &errb
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, errb.String())
		}
		return string(out), errb.String()
	}
	prompt := "Reach Omar at omar.haddad@example.com or +44 7400 123456; IP 203.0.113.7.\n"
	redacted, _ := run(writer, prompt, "redact")
	if strings.Contains(redacted, "omar.haddad@example.com") || strings.Contains(redacted, "203.0.113.7") || !strings.HasSuffix(redacted, ".\n") {
		t.Fatalf("redacted: %q", redacted)
	}
	masked, _ := run(writer, prompt, "redact", "--mask", "--types", "EMAIL")
	if masked != "Reach Omar at [EMAIL] or +44 7400 123456; IP 203.0.113.7.\n" {
		t.Fatalf("masked: %q", masked)
	}
	s.must(201, "POST", "/v1/grants", admin, map[string]any{"principal_id": agentID, "collection": "text", "fields": []string{"email", "ip_address"}, "purpose": "support", "ttl": "1h", "reveal": "plain"})
	restored, _ := run(agent, redacted, "restore-text", "--purpose", "support")
	if !strings.Contains(restored, "omar.haddad@example.com") || !strings.Contains(restored, "203.0.113.7") || !strings.Contains(restored, "[PHONE_") {
		t.Fatalf("restored: %q", restored)
	}

	// A value the vault holds in a detect field is found by its words and
	// restored through a grant on that field.
	s.must(201, "POST", "/v1/collections", admin, map[string]any{"name": "clients", "fields": []map[string]any{
		{"name": "name", "type": "string", "sensitive": true, "token": "deterministic", "detect": true},
	}})
	s.must(201, "POST", "/v1/collections/clients/records", writer, map[string]any{"records": []map[string]any{{"fields": map[string]any{"name": "Omar Haddad"}}}})
	redacted, _ = run(writer, "Call OMAR   haddad today.\n", "redact")
	if !strings.HasPrefix(redacted, "Call [CLIENTS_NAME_") || strings.Contains(strings.ToLower(redacted), "haddad") {
		t.Fatalf("known value: %q", redacted)
	}
	s.must(201, "POST", "/v1/grants", admin, map[string]any{"principal_id": agentID, "collection": "clients", "fields": []string{"name"}, "purpose": "support", "ttl": "1h", "reveal": "plain"})
	if restored, _ = run(agent, redacted, "restore", "--purpose", "support"); restored != "Call Omar Haddad today.\n" {
		t.Fatalf("known value restored: %q", restored)
	}
}
