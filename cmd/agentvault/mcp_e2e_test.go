package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentvault/agentvault/internal/vaulttest"
)

type bearerRT struct {
	token string
	next  http.RoundTripper
}

func (b bearerRT) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

// mcpSessions connects the Go SDK's client to the binary both ways: over
// stdio through `agentvault mcp`, and over streamable HTTP to /mcp.
func mcpSessions(t *testing.T, s *server, token string) map[string]*mcp.ClientSession {
	t.Helper()
	ctx := context.Background()
	out := map[string]*mcp.ClientSession{}
	cmd := exec.Command(avBinary, "mcp")
	cmd.Env = append(os.Environ(), "AGENTVAULT_URL="+s.url, "AGENTVAULT_TOKEN="+token)
	stdio, err := mcp.NewClient(&mcp.Implementation{Name: "e2e-stdio-host", Version: "1.0"}, nil).Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatalf("stdio: %v", err)
	}
	t.Cleanup(func() { stdio.Close() })
	out["stdio"] = stdio
	remote, err := mcp.NewClient(&mcp.Implementation{Name: "e2e-http-host", Version: "1.0"}, nil).Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint: s.url + "/mcp", HTTPClient: &http.Client{Timeout: 2 * time.Minute, Transport: bearerRT{token, http.DefaultTransport}}, MaxRetries: -1, DisableStandaloneSSE: true,
	}, nil)
	if err != nil {
		t.Fatalf("streamable HTTP: %v", err)
	}
	t.Cleanup(func() { remote.Close() })
	out["http"] = remote
	return out
}

// tool calls a tool; a tool error comes back as {"error": {code, message}}.
func tool(t *testing.T, cs *mcp.ClientSession, name string, args map[string]any) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if res.IsError {
		code, msg, _ := strings.Cut(res.Content[0].(*mcp.TextContent).Text, ": ")
		return map[string]any{"error": map[string]any{"code": code, "message": msg}}
	}
	var out map[string]any
	b, _ := json.Marshal(res.StructuredContent)
	json.Unmarshal(b, &out)
	return out
}

// TestMCPThroughTheBinary: stdio and streamable HTTP list the same tools;
// an agent sees and reveals through them exactly what its grant allows;
// a reveal held for approval is redeemed once after an approver approves
// over HTTP; every call is audited with the MCP client's name; a revoked
// token is refused on the next call; a bad token fails `agentvault mcp` at
// start.
func TestMCPThroughTheBinary(t *testing.T) {
	t.Parallel()
	s := start(t, t.TempDir(), adminEnv)
	s.must(201, "POST", "/v1/collections", admin, map[string]any{"name": "hr", "fields": []map[string]any{
		{"name": "dept", "type": "string", "index": true},
		{"name": "name", "type": "string", "sensitive": true},
		{"name": "ssn", "type": "string", "sensitive": true, "approval": "always"},
	}})
	writer := s.must(201, "POST", "/v1/principals", admin, map[string]any{"name": "app", "roles": []string{"writer"}})["token"].(string)
	approver := s.must(201, "POST", "/v1/principals", admin, map[string]any{"name": "carol", "roles": []string{"approver"}})["token"].(string)
	auditor := s.must(201, "POST", "/v1/principals", admin, map[string]any{"name": "aud", "roles": []string{"auditor"}})["token"].(string)
	agent, agentID := newAgent(s)
	id, fields := firstRecord(s.must(201, "POST", "/v1/collections/hr/records", writer, map[string]any{"records": []map[string]any{
		{"fields": map[string]any{"dept": "eng", "name": secrets[0], "ssn": "123-45-6789"}},
	}}))

	bad := command(2*time.Minute, avBinary, "mcp")
	bad.Env = append(os.Environ(), "AGENTVAULT_URL="+s.url, "AGENTVAULT_TOKEN=wrong-token-0123456789")
	if out, err := bad.CombinedOutput(); err == nil || !strings.Contains(string(out), "AGENTVAULT_TOKEN does not work") {
		t.Fatalf("agentvault mcp with a wrong token: %v %s", err, out)
	}

	sessions := mcpSessions(t, s, agent)
	var toolsets [][]string
	for _, cs := range sessions {
		list, err := cs.ListTools(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, tl := range list.Tools {
			names = append(names, tl.Name)
		}
		slices.Sort(names)
		toolsets = append(toolsets, names)
		if got := tool(t, cs, "list_collections", nil); len(got["collections"].([]any)) != 0 {
			t.Fatalf("collections without a grant: %v", got)
		}
	}
	if !slices.Equal(toolsets[0], toolsets[1]) || len(toolsets[0]) != 10 {
		t.Fatalf("the transports list different tools: %v", toolsets)
	}

	s.must(201, "POST", "/v1/grants", admin, map[string]any{"principal_id": agentID, "collection": "hr", "fields": []string{"dept", "name", "ssn"}, "purpose": "review", "ttl": "1h", "reveal": "plain"})
	for via, cs := range sessions {
		rec := tool(t, cs, "get_record", map[string]any{"collection": "hr", "id": id, "purpose": "review"})
		if rec["fields"].(map[string]any)["name"] != fields["name"] {
			t.Fatalf("%s get_record: %v", via, rec)
		}
		found := tool(t, cs, "search_records", map[string]any{"collection": "hr", "where": map[string]any{"dept": "eng"}, "purpose": "review"})
		if len(found["records"].([]any)) != 1 {
			t.Fatalf("%s search_records: %v", via, found)
		}
		det := tool(t, cs, "detokenize", map[string]any{"tokens": []any{fields["name"]}, "purpose": "review"})
		if r := det["results"].([]any)[0].(map[string]any); r["status"] != "ok" || r["value"] != secrets[0] {
			t.Fatalf("%s detokenize: %v", via, det)
		}
		if e := tool(t, cs, "get_record", map[string]any{"collection": "hr", "id": id, "purpose": "marketing"}); e["error"].(map[string]any)["code"] != "collection_not_found" {
			t.Fatalf("%s read for another purpose: %v", via, e)
		}
	}

	// A reveal that needs a person: held, approved over HTTP, redeemed once.
	cs := sessions["stdio"]
	held := tool(t, cs, "detokenize", map[string]any{"tokens": []any{fields["ssn"]}, "purpose": "review"})
	r := held["results"].([]any)[0].(map[string]any)
	approvalID, _ := r["approval_id"].(string)
	if r["status"] != "pending_approval" || approvalID == "" || r["value"] != nil {
		t.Fatalf("held reveal: %v", held)
	}
	if st := tool(t, cs, "approval_status", map[string]any{"approval_id": approvalID}); st["status"] != "pending" {
		t.Fatalf("approval_status: %v", st)
	}
	s.must(200, "POST", "/v1/approvals/"+approvalID+"/approve", approver, map[string]any{"reason": "HR case 12"})
	redeem := map[string]any{"tokens": []any{fields["ssn"]}, "purpose": "review", "approval_id": approvalID}
	if got := tool(t, cs, "detokenize", redeem); got["results"].([]any)[0].(map[string]any)["value"] != "123-45-6789" {
		t.Fatalf("redeemed: %v", got)
	}
	if again := tool(t, sessions["http"], "detokenize", redeem); again["error"].(map[string]any)["code"] != "approval_not_redeemable" {
		t.Fatalf("second redemption: %v", again)
	}

	// Free text: redacted through one transport, restored through the
	// other, as far as the agent's grants on the text collection go.
	red := tool(t, sessions["http"], "redact_text", map[string]any{"text": "Mail jane.doe@example.com about card 4111 1111 1111 1111."})
	redacted, _ := red["text"].(string)
	if strings.Contains(redacted, "jane.doe@example.com") || !strings.Contains(redacted, "[EMAIL_") {
		t.Fatalf("redact_text: %v", red)
	}
	s.must(201, "POST", "/v1/grants", admin, map[string]any{"principal_id": agentID, "collection": "text", "fields": []string{"email"}, "purpose": "review", "ttl": "1h", "reveal": "plain"})
	back := tool(t, sessions["stdio"], "restore_text", map[string]any{"text": redacted, "purpose": "review"})
	if txt, _ := back["text"].(string); !strings.Contains(txt, "jane.doe@example.com") || strings.Contains(txt, "4111") || !strings.Contains(txt, "[CREDIT_CARD_") {
		t.Fatalf("restore_text: %v", back)
	}

	// Every call is audited as MCP, with the host's name.
	clients := map[string]bool{}
	for _, e := range s.must(200, "GET", "/v1/audit?actor="+agentID+"&limit=1000", auditor, nil)["entries"].([]any) {
		m := e.(map[string]any)
		if m["via"] != "mcp" {
			t.Fatalf("an agent call without via mcp: %v", m)
		}
		clients[m["client"].(string)] = true
	}
	if !clients["e2e-stdio-host/1.0"] || !clients["e2e-http-host/1.0"] {
		t.Fatalf("clients in the audit log: %v", clients)
	}

	// Revoked: the next call fails, on both.
	s.must(204, "DELETE", "/v1/principals/"+agentID, admin, nil)
	if e := tool(t, sessions["stdio"], "whoami", nil); e["error"] == nil {
		t.Fatalf("stdio whoami after revocation: %v", e)
	}
	if _, err := sessions["http"].CallTool(context.Background(), &mcp.CallToolParams{Name: "whoami"}); err == nil {
		t.Fatal("streamable HTTP call after revocation went through")
	}
}

// TestMCPWithTheTypeScriptClient holds the server to the protocol with a
// second, independent client: the official TypeScript SDK's (installed by
// scripts/mcpclient.sh from the npm registry), over streamable HTTP and
// over stdio. That client also validates each structured result against
// the tool's output schema.
func TestMCPWithTheTypeScriptClient(t *testing.T) {
	t.Parallel()
	dir := os.Getenv("AGENTVAULT_MCP_CLIENT")
	if dir == "" {
		vaulttest.Missing(t, "AGENTVAULT_REQUIRE_VAULT", "AGENTVAULT_MCP_CLIENT is not set: the TypeScript MCP client is not installed; scripts/test.sh installs it (scripts/mcpclient.sh)")
	}
	s := start(t, t.TempDir(), adminEnv)
	_, id, tokens, agent := seedRevealable(s, "name")
	cmd := command(3*time.Minute, "node", "check.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "AV_URL="+s.url, "AV_TOKEN="+agent, "AV_BIN="+avBinary,
		"AV_COLLECTION=hr", "AV_RECORD="+id, "AV_PURPOSE=e2e", "AV_REVEAL="+tokens["name"].(string))
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("TypeScript client: %v\n%s\n%s", err, out, stderr)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 2 {
		t.Fatalf("want a line per transport:\n%s", out)
	}
	for _, line := range lines {
		var got struct {
			Transport string
			Tools     []struct {
				Name, Input, Output string
				ReadOnly            bool
				OpenWorld           *bool
			}
			Collections struct{ Collections []struct{ Name string } }
			Record      struct{ Fields map[string]any }
			Reveal      struct {
				Results []struct{ Status, Value string }
			}
			Refused struct {
				IsError bool
				Text    string
			}
		}
		if err := json.Unmarshal([]byte(line), &got); err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		if len(got.Tools) != 10 {
			t.Fatalf("%s: %d tools", got.Transport, len(got.Tools))
		}
		for _, tl := range got.Tools {
			writes := tl.Name == "detokenize" || tl.Name == "redact_text" || tl.Name == "restore_text"
			if tl.Input != "object" || tl.Output != "object" || tl.OpenWorld == nil || *tl.OpenWorld || tl.ReadOnly == writes {
				t.Fatalf("%s: tool %+v", got.Transport, tl)
			}
		}
		if len(got.Collections.Collections) != 1 || got.Record.Fields["name"] != tokens["name"] ||
			len(got.Reveal.Results) != 1 || got.Reveal.Results[0].Status != "ok" || got.Reveal.Results[0].Value != secrets[0] {
			t.Fatalf("%s: %s", got.Transport, line)
		}
		if !got.Refused.IsError || !strings.HasPrefix(got.Refused.Text, "collection_not_found: ") {
			t.Fatalf("%s: refusal %+v", got.Transport, got.Refused)
		}
	}
}
