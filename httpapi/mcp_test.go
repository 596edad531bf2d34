package httpapi_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// bearer adds an API token to every request of an MCP client.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

// connectMCP opens an MCP session over streamable HTTP with the Go SDK's
// client, as the given token.
func connectMCP(t *testing.T, url, token string) (*mcp.ClientSession, error) {
	t.Helper()
	c := mcp.NewClient(&mcp.Implementation{Name: "agentvault-test-client", Version: "0.1"}, nil)
	return c.Connect(context.Background(), &mcp.StreamableClientTransport{
		Endpoint: url + "/mcp", HTTPClient: &http.Client{Transport: bearer{token, http.DefaultTransport}}, MaxRetries: -1, DisableStandaloneSSE: true,
	}, nil)
}

// callTool calls a tool and decodes its structured result.
func callTool(t *testing.T, s *mcp.ClientSession, name string, args map[string]any) (map[string]any, bool) {
	t.Helper()
	res, err := s.CallTool(context.Background(), &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("%s: protocol error %v", name, err)
	}
	var out map[string]any
	if res.IsError {
		// A tool error reads "code: message".
		text := res.Content[0].(*mcp.TextContent).Text
		code, msg, _ := strings.Cut(text, ": ")
		return map[string]any{"error": map[string]any{"code": code, "message": msg}}, true
	}
	b, _ := json.Marshal(res.StructuredContent)
	json.Unmarshal(b, &out)
	return out, res.IsError
}

// TestMCPOverHTTP: the /mcp endpoint with the Go SDK's client: the tools
// with their schemas, an agent seeing and revealing what its grants allow
// and nothing more, refusals as tool errors with the API's codes, every
// call audited as MCP with the client's name, and a revoked token stopped.
func TestMCPOverHTTP(t *testing.T) {
	t.Parallel()
	a := newAPI(t, 0)
	_, _, auditor, id := a.setup()
	botID, bot := a.principal("mcp-bot", "agent")
	if _, err := connectMCP(t, a.url, "not-a-token"); err == nil {
		t.Fatal("connected with a bad token")
	}
	if ans := a.do("POST", "/mcp", "", `{}`); ans.status != 401 {
		t.Fatalf("/mcp without a token: %d", ans.status)
	}
	if ans := a.do("POST", "/mcp", auditor, `{}`); ans.status != 403 {
		t.Fatalf("/mcp for an auditor: %d", ans.status)
	}
	s, err := connectMCP(t, a.url, bot)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tools, err := s.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range tools.Tools {
		names = append(names, tool.Name)
		if tool.InputSchema == nil || tool.OutputSchema == nil || tool.Description == "" || tool.Annotations == nil || tool.Annotations.OpenWorldHint == nil || *tool.Annotations.OpenWorldHint {
			t.Errorf("tool %s: schemas, description or annotations missing", tool.Name)
		}
	}
	slices.Sort(names)
	if want := []string{"approval_status", "describe_collection", "detokenize", "get_record", "list_collections", "list_records", "redact_text", "restore_text", "search_records", "whoami"}; !slices.Equal(names, want) {
		t.Fatalf("tools %v, want %v", names, want)
	}
	if who, _ := callTool(t, s, "whoami", nil); who["id"] != botID {
		t.Fatalf("whoami: %v", who)
	}
	// No grant: nothing to see, and a refusal is a tool error with a code.
	if cs, _ := callTool(t, s, "list_collections", nil); len(cs["collections"].([]any)) != 0 {
		t.Fatalf("collections without a grant: %v", cs)
	}
	out, isErr := callTool(t, s, "get_record", map[string]any{"collection": "staff", "id": id, "purpose": "p"})
	if !isErr || out["error"].(map[string]any)["code"] != "collection_not_found" {
		t.Fatalf("get_record without a grant: %v %v", out, isErr)
	}
	if g := a.do("POST", "/v1/grants", adminToken, `{"principal_id":"`+botID+`","collection":"staff","fields":["name","card"],"purpose":"p","ttl":"1h","reveal":"plain"}`); g.status != 201 {
		t.Fatalf("grant: %s", g.raw)
	}
	rec, isErr := callTool(t, s, "get_record", map[string]any{"collection": "staff", "id": id, "purpose": "p"})
	fields, _ := rec["fields"].(map[string]any)
	if isErr || len(fields) != 2 || fields["name"] != "Ann" {
		t.Fatalf("get_record under the grant: %v", rec)
	}
	det, _ := callTool(t, s, "detokenize", map[string]any{"tokens": []string{fields["card"].(string)}, "purpose": "p"})
	if r := det["results"].([]any)[0].(map[string]any); r["status"] != "ok" || r["value"] != "4111111111111111" {
		t.Fatalf("detokenize: %v", det)
	}
	if page, _ := callTool(t, s, "list_records", map[string]any{"collection": "staff", "purpose": "p"}); len(page["records"].([]any)) != 1 {
		t.Fatalf("list_records: %v", page)
	}
	// Every call is audited as MCP, with the client's name.
	log := a.do("GET", "/v1/audit?actor="+botID, auditor, "")
	entries := log.body["entries"].([]any)
	if len(entries) < 4 {
		t.Fatalf("entries: %s", log.raw)
	}
	for _, e := range entries {
		m := e.(map[string]any)
		if m["via"] != "mcp" || m["client"] != "agentvault-test-client/0.1" || !strings.HasPrefix(m["request_id"].(string), "mcp-") {
			t.Fatalf("entry without its MCP context: %v", m)
		}
	}
	// A session belongs to the principal that opened it: another agent's
	// token with its session id is refused, and learns nothing.
	_, otherBot := a.principal("other-bot", "agent")
	call := `{"jsonrpc":"2.0","id":99,"method":"tools/call","params":{"name":"whoami","arguments":{}}}`
	req, _ := http.NewRequest("POST", a.url+"/mcp", strings.NewReader(call))
	req.Header.Set("Authorization", "Bearer "+otherBot)
	req.Header.Set("Mcp-Session-Id", s.ID())
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK || strings.Contains(string(body), botID) {
		t.Fatalf("another agent's token on this session: %d %s", resp.StatusCode, body)
	}
	// A revoked token stops at its next call.
	if ans := a.do("DELETE", "/v1/principals/"+botID, adminToken, ""); ans.status != 204 {
		t.Fatalf("revoke: %d", ans.status)
	}
	if _, err := s.CallTool(context.Background(), &mcp.CallToolParams{Name: "whoami"}); err == nil {
		t.Fatal("a revoked token still calls tools")
	}
}
