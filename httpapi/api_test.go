package httpapi_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/agentvault/agentvault/internal/apitest"
)

const adminToken = apitest.AdminToken

type api struct {
	t   *testing.T
	url string
}

// newAPI runs the real handler over a real Badger and a local KEK.
func newAPI(t *testing.T, maxBody int64) *api {
	t.Helper()
	return &api{t: t, url: apitest.Start(t, apitest.Options{MaxBodyBytes: maxBody})}
}

type answer struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func (a *api) do(method, path, token, body string) answer {
	a.t.Helper()
	req, err := http.NewRequest(method, a.url+path, strings.NewReader(body))
	if err != nil {
		a.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	ans := answer{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	if len(raw) > 0 && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &ans.body); err != nil {
			a.t.Fatalf("%s %s: answer is not a JSON object: %s", method, path, raw)
		}
	}
	return ans
}

// errorCode checks the contract's error shape and returns the code.
func (ans answer) errorCode(t *testing.T) string {
	t.Helper()
	e, ok := ans.body["error"].(map[string]any)
	if !ok {
		t.Fatalf("status %d without the error shape: %s", ans.status, ans.raw)
	}
	code, _ := e["code"].(string)
	msg, _ := e["message"].(string)
	if code == "" || msg == "" || len(ans.body) != 1 || len(e) != 2 {
		t.Fatalf("error shape is not {error:{code,message}}: %s", ans.raw)
	}
	return code
}

// errCase is a request that must fail with the contract's error shape,
// status and code.
type errCase struct {
	name, method, path, token, body string
	status                          int
	code                            string
}

func (a *api) expectErrors(t *testing.T, cases []errCase) {
	t.Helper()
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			ans := a.do(tt.method, tt.path, tt.token, tt.body)
			if ans.status != tt.status {
				t.Fatalf("status %d, want %d: %s", ans.status, tt.status, ans.raw)
			}
			if code := ans.errorCode(t); code != tt.code {
				t.Errorf("code %q, want %q", code, tt.code)
			}
		})
	}
}

func (a *api) principal(name string, roles ...string) (id, token string) {
	a.t.Helper()
	b, _ := json.Marshal(map[string]any{"name": name, "roles": roles})
	ans := a.do("POST", "/v1/principals", adminToken, string(b))
	if ans.status != http.StatusCreated {
		a.t.Fatalf("create principal: %d %s", ans.status, ans.raw)
	}
	return ans.body["id"].(string), ans.body["token"].(string)
}

const schema = `{"name":"staff","fields":[
 {"name":"name","type":"string"},
 {"name":"salary","type":"number","sensitive":true},
 {"name":"card","type":"string","sensitive":true,"token":"format_preserving","format":"card"}]}`

func (a *api) setup() (writer, agent, auditor string, recordID string) {
	a.t.Helper()
	if ans := a.do("POST", "/v1/collections", adminToken, schema); ans.status != http.StatusCreated {
		a.t.Fatalf("create collection: %d %s", ans.status, ans.raw)
	}
	_, writer = a.principal("app", "writer")
	agentID, agent := a.principal("bot", "agent")
	_, auditor = a.principal("audit", "auditor")
	// The agent sees the collection through a grant that reveals nothing.
	if g := a.do("POST", "/v1/grants", adminToken, `{"principal_id":"`+agentID+`","collection":"staff","fields":["name","salary","card"],"purpose":"read","ttl":"1h","reveal":"none"}`); g.status != http.StatusCreated {
		a.t.Fatalf("grant: %d %s", g.status, g.raw)
	}
	ans := a.do("POST", "/v1/collections/staff/records", writer, `{"records":[{"fields":{"name":"Ann","salary":50000,"card":"4111111111111111"}}]}`)
	if ans.status != http.StatusCreated {
		a.t.Fatalf("create record: %d %s", ans.status, ans.raw)
	}
	rec := ans.body["records"].([]any)[0].(map[string]any)
	return writer, agent, auditor, rec["id"].(string)
}

func TestAuthAndRoles(t *testing.T) {
	t.Parallel()
	a := newAPI(t, 0)
	writer, agent, auditor, id := a.setup()
	revokedID, revoked := a.principal("gone", "writer")
	if ans := a.do("DELETE", "/v1/principals/"+revokedID, adminToken, ""); ans.status != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", ans.status, ans.raw)
	}
	rec := "/v1/collections/staff/records"
	body := `{"records":[{"fields":{"name":"Bo"}}]}`
	tests := []struct {
		name, method, path, token, body string
		want                            int
	}{
		{"no token", "GET", "/v1/collections", "", "", 401},
		{"garbage token", "GET", "/v1/collections", "nope", "", 401},
		{"revoked token", "POST", rec, revoked, body, 401},
		{"no token on write", "POST", rec, "", body, 401},
		{"any role lists collections", "GET", "/v1/collections", auditor, "", 200},
		{"any role reads a schema", "GET", "/v1/collections/staff", agent, "", 200},
		{"writer cannot create collections", "POST", "/v1/collections", writer, schema, 403},
		{"agent cannot create principals", "POST", "/v1/principals", agent, `{"name":"x","roles":["admin"]}`, 403},
		{"writer cannot list principals", "GET", "/v1/principals", writer, "", 403},
		{"agent cannot write records", "POST", rec, agent, body, 403},
		{"auditor cannot read records", "GET", rec + "/" + id, auditor, "", 403},
		{"agent cannot delete records", "DELETE", rec + "/" + id, agent, "", 403},
		{"agent reads records", "GET", rec + "/" + id + "?purpose=read", agent, "", 200},
		{"agent reads records only with a purpose", "GET", rec + "/" + id, agent, "", 400},
		{"writer reads records", "GET", rec + "/" + id, writer, "", 200},
		{"writer writes records", "POST", rec, writer, body, 201},
		{"admin lists principals", "GET", "/v1/principals", adminToken, "", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ans := a.do(tt.method, tt.path, tt.token, tt.body)
			if ans.status != tt.want {
				t.Fatalf("%s %s = %d, want %d: %s", tt.method, tt.path, ans.status, tt.want, ans.raw)
			}
			if tt.want >= 400 {
				ans.errorCode(t)
			}
			if tt.want == 401 && ans.header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}
	// Records are read as tokens, never plaintext, by every role.
	ans := a.do("GET", rec+"/"+id, agent, "")
	if strings.Contains(ans.raw, "50000") || strings.Contains(ans.raw, "4111111111111111") {
		t.Fatalf("record read returned plaintext: %s", ans.raw)
	}
	// The principal list never shows tokens or hashes.
	list := a.do("GET", "/v1/principals", adminToken, "")
	if strings.Contains(list.raw, writer) || strings.Contains(list.raw, "token") {
		t.Fatalf("principal list shows token material: %s", list.raw)
	}
}

func recordsWritten(t *testing.T, a *api) string {
	t.Helper()
	m := a.do("GET", "/metrics", "", "")
	for _, line := range strings.Split(m.raw, "\n") {
		if strings.HasPrefix(line, "agentvault_records_written_total ") {
			return line
		}
	}
	t.Fatal("no agentvault_records_written_total metric")
	return ""
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	a := newAPI(t, 2048)
	writer, _, _, id := a.setup()
	rec := "/v1/collections/staff/records"
	before := recordsWritten(t, a)
	tests := []struct {
		name, method, path, token, body string
		status                          int
		code                            string
		mentions                        string
	}{
		{"malformed JSON", "POST", rec, writer, `{"records":[{"fields":{"name":"x"}]}`, 400, "malformed_json", "byte"},
		{"truncated JSON", "POST", rec, writer, `{"records":[`, 400, "malformed_json", ""},
		{"empty body", "POST", rec, writer, ``, 400, "malformed_json", "empty"},
		{"trailing data", "POST", rec, writer, `{"records":[{"fields":{"name":"x"}}]} {}`, 400, "malformed_json", "trailing"},
		{"unknown request field", "POST", rec, writer, `{"records":[],"upsert":true}`, 400, "unknown_field", "upsert"},
		{"records not a list", "POST", rec, writer, `{"records":"x"}`, 400, "wrong_type", "records"},
		{"empty batch", "POST", rec, writer, `{"records":[]}`, 400, "empty_batch", ""},
		{"unknown record field", "POST", rec, writer, `{"records":[{"fields":{"nickname":"x"}}]}`, 400, "unknown_field", "nickname"},
		{"wrong type names the field", "POST", rec, writer, `{"records":[{"fields":{"salary":"lots"}}]}`, 400, "wrong_type", "salary"},
		{"bad card value", "POST", rec, writer, `{"records":[{"fields":{"card":"12"}}]}`, 400, "invalid_value", "card"},
		{"one bad record rejects the batch", "POST", rec, writer,
			`{"records":[{"fields":{"name":"a"}},{"fields":{"name":"b","salary":true}},{"fields":{"name":"c"}}]}`, 400, "wrong_type", "record 1"},
		{"missing collection", "POST", "/v1/collections/nope/records", writer, `{"records":[{"fields":{"name":"x"}}]}`, 404, "collection_not_found", "nope"},
		{"missing record", "GET", rec + "/0198f6f4-0000-7000-8000-000000000000", writer, "", 404, "record_not_found", ""},
		{"record in missing collection", "GET", "/v1/collections/nope/records/" + id, writer, "", 404, "collection_not_found", ""},
		{"delete missing record", "DELETE", rec + "/nope", writer, "", 404, "record_not_found", ""},
		{"body over the limit", "POST", rec, writer, `{"records":[{"fields":{"name":"` + strings.Repeat("x", 4096) + `"}}]}`, 413, "body_too_large", "2048"},
		{"bad collection schema", "POST", "/v1/collections", adminToken, `{"name":"x","fields":[{"name":"a","type":"date"}]}`, 400, "invalid_field", "type"},
		{"duplicate collection", "POST", "/v1/collections", adminToken, schema, 409, "collection_exists", "staff"},
		{"bad role", "POST", "/v1/principals", adminToken, `{"name":"x","roles":["root"]}`, 400, "invalid_roles", "root"},
		{"unknown route", "GET", "/v1/nothing", writer, "", 404, "no_route", ""},
		{"wrong method", "PUT", rec, writer, "{}", 405, "method_not_allowed", ""},
		{"revoke missing principal", "DELETE", "/v1/principals/nope", adminToken, "", 404, "principal_not_found", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ans := a.do(tt.method, tt.path, tt.token, tt.body)
			if ans.status != tt.status {
				t.Fatalf("status %d, want %d: %s", ans.status, tt.status, ans.raw)
			}
			if code := ans.errorCode(t); code != tt.code {
				t.Errorf("code %q, want %q (%s)", code, tt.code, ans.raw)
			}
			if !strings.Contains(ans.raw, tt.mentions) {
				t.Errorf("message does not mention %q: %s", tt.mentions, ans.raw)
			}
			for _, v := range []string{"lots", "4111"} {
				if strings.Contains(ans.raw, v) && strings.Contains(tt.body, v) {
					t.Errorf("error echoes the value %q: %s", v, ans.raw)
				}
			}
		})
	}
	if after := recordsWritten(t, a); after != before {
		t.Errorf("rejected requests stored records: %q -> %q", before, after)
	}
	if ans := a.do("GET", "/healthz", "", ""); ans.status != 200 {
		t.Fatalf("server not healthy after bad input: %d", ans.status)
	}
}

func TestRecordLifecycle(t *testing.T) {
	t.Parallel()
	a := newAPI(t, 0)
	writer, agent, _, _ := a.setup()
	var batch bytes.Buffer
	batch.WriteString(`{"records":[`)
	for i := range 100 {
		if i > 0 {
			batch.WriteString(",")
		}
		batch.WriteString(`{"fields":{"name":"n","salary":` + string(rune('1'+i%9)) + `,"card":"4111 1111 1111 1111"}}`)
	}
	batch.WriteString(`]}`)
	ans := a.do("POST", "/v1/collections/staff/records", writer, batch.String())
	if ans.status != 201 {
		t.Fatalf("batch create: %d %s", ans.status, ans.raw)
	}
	recs := ans.body["records"].([]any)
	if len(recs) != 100 {
		t.Fatalf("%d records back, want 100", len(recs))
	}
	cards := map[string]bool{}
	for _, r := range recs {
		f := r.(map[string]any)["fields"].(map[string]any)
		card := f["card"].(string)
		if cards[card] || !strings.HasSuffix(card, "1111") || len(card) != 19 {
			t.Fatalf("card token %q repeated or misshapen", card)
		}
		cards[card] = true
		if s, ok := f["salary"].(string); !ok || !strings.HasPrefix(s, "tok_") {
			t.Fatalf("salary token %v", f["salary"])
		}
	}
	id := recs[0].(map[string]any)["id"].(string)
	got := a.do("GET", "/v1/collections/staff/records/"+id+"?purpose=read", agent, "")
	if got.status != 200 || got.body["id"] != id {
		t.Fatalf("read back: %d %s", got.status, got.raw)
	}
	if ans := a.do("DELETE", "/v1/collections/staff/records/"+id, writer, ""); ans.status != 204 {
		t.Fatalf("delete: %d %s", ans.status, ans.raw)
	}
	if ans := a.do("GET", "/v1/collections/staff/records/"+id+"?purpose=read", agent, ""); ans.status != 404 {
		t.Fatalf("read after delete: %d", ans.status)
	}
	if ans := a.do("GET", "/readyz", "", ""); ans.status != 200 {
		t.Fatalf("readyz: %d %s", ans.status, ans.raw)
	}
	if ans := a.do("GET", "/v1/collections", agent, ""); ans.status != 200 || len(ans.body["collections"].([]any)) != 1 {
		t.Fatalf("list collections: %s", ans.raw)
	}
}

// TestAuthFailuresObserved: refused requests are counted by reason and
// logged as warnings with route and remote address, and the log never
// holds the token that was tried.
func TestAuthFailuresObserved(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	a := &api{t: t, url: apitest.Start(t, apitest.Options{Logger: slog.New(slog.NewJSONHandler(&logs, nil))})}
	_, writer := a.principal("app", "writer")
	_, revoked := a.principal("gone", "writer")
	revokedID := a.do("GET", "/v1/me", revoked, "").body["id"].(string)
	a.do("DELETE", "/v1/principals/"+revokedID, adminToken, "")
	const tried = "avt_TRIEDTOKENTHATDOESNOTEXIST0123456789"
	steps := []struct {
		token, method, path string
		want                int
	}{
		{"", "GET", "/v1/collections", 401},
		{tried, "GET", "/v1/collections", 401},
		{tried, "POST", "/v1/detokenize", 401},
		{revoked, "GET", "/v1/collections", 401},
		{writer, "GET", "/v1/principals", 403},
		{writer, "GET", "/v1/collections", 200},
	}
	for _, st := range steps {
		if ans := a.do(st.method, st.path, st.token, ""); ans.status != st.want {
			t.Fatalf("%s %s: %d, want %d", st.method, st.path, ans.status, st.want)
		}
	}
	metrics := a.do("GET", "/metrics", "", "").raw
	for _, want := range []string{
		`agentvault_http_auth_failures_total{reason="missing_token"} 1`,
		`agentvault_http_auth_failures_total{reason="invalid_token"} 3`,
		`agentvault_http_auth_failures_total{reason="forbidden"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	out := logs.String()
	if n := strings.Count(out, `"msg":"authentication failed: unknown or revoked API token"`); n != 3 {
		t.Errorf("%d authentication-failure warnings, want 3:\n%s", n, out)
	}
	if !strings.Contains(out, `"route":"/v1/detokenize"`) || !strings.Contains(out, `"remote_addr":"127.0.0.1:`) {
		t.Errorf("warnings lack route or remote address:\n%s", out)
	}
	if !strings.Contains(out, `"msg":"forbidden: principal lacks the role"`) || !strings.Contains(out, `"needs":"admin, auditor"`) {
		t.Errorf("no forbidden warning naming the roles:\n%s", out)
	}
	// Not even a piece: no 8 characters in a row of any token tried.
	for _, tok := range []string{tried, writer, revoked} {
		body := strings.TrimPrefix(tok, "avt_")
		for i := 0; i+8 <= len(body); i++ {
			if strings.Contains(out, body[i:i+8]) {
				t.Fatalf("log holds token material %q (from %q)", body[i:i+8], tok)
			}
		}
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
