package httpapi_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

func TestGrantsDetokenizeAudit(t *testing.T) {
	t.Parallel()
	a := newAPI(t, 0)
	writer, _, auditor, id := a.setup()
	agentID, agent := a.principal("agent-1", "agent")
	_, approver := a.principal("approver-1", "approver")
	rec := a.do("GET", "/v1/collections/staff/records/"+id, writer, "")
	fields := rec.body["fields"].(map[string]any)
	salary, card := fields["salary"].(string), fields["card"].(string)

	grant := fmt.Sprintf(`{"principal_id":%q,"collection":"staff","fields":["salary"],"purpose":"payroll","ttl":"1h","reveal":"plain","max_uses":5}`, agentID)
	a.expectErrors(t, []errCase{
		{"agent cannot create grants", "POST", "/v1/grants", agent, grant, 403, "forbidden"},
		{"grant for a non-agent", "POST", "/v1/grants", adminToken, strings.Replace(grant, agentID, "nobody", 1), 400, "unknown_principal"},
		{"grant with zero ttl", "POST", "/v1/grants", adminToken, strings.Replace(grant, `"1h"`, `"0s"`, 1), 400, "invalid_ttl"},
		{"grant on unknown field", "POST", "/v1/grants", adminToken, strings.Replace(grant, `["salary"]`, `["bonus"]`, 1), 400, "unknown_field"},
		{"grant with unknown key", "POST", "/v1/grants", adminToken, strings.Replace(grant, `"ttl"`, `"tll"`, 1), 400, "unknown_field"},
		{"writer cannot detokenize", "POST", "/v1/detokenize", writer, `{"tokens":["x"],"purpose":"p"}`, 403, "forbidden"},
		{"approver cannot detokenize", "POST", "/v1/detokenize", approver, `{"tokens":["x"],"purpose":"p"}`, 403, "forbidden"},
		{"detokenize without purpose", "POST", "/v1/detokenize", agent, `{"tokens":["x"]}`, 400, "invalid_purpose"},
		{"detokenize without tokens", "POST", "/v1/detokenize", agent, `{"tokens":[],"purpose":"p"}`, 400, "empty_tokens"},
		{"agent cannot read the audit log", "GET", "/v1/audit", agent, "", 403, "forbidden"},
		{"writer cannot verify the audit log", "GET", "/v1/audit/verify", writer, "", 403, "forbidden"},
		{"bad audit limit", "GET", "/v1/audit?limit=0", auditor, "", 400, "invalid_limit"},
		{"audit limit too high", "GET", "/v1/audit?limit=5000", auditor, "", 400, "invalid_limit"},
		{"bad audit since", "GET", "/v1/audit?since=yesterday", auditor, "", 400, "invalid_since"},
		{"bad grant state filter", "GET", "/v1/grants?state=dead", adminToken, "", 400, "invalid_state"},
		{"revoke unknown grant", "DELETE", "/v1/grants/nope", adminToken, "", 404, "grant_not_found"},
	})

	// No grant: denied, with a reason and no value.
	ans := a.do("POST", "/v1/detokenize", agent, fmt.Sprintf(`{"tokens":[%q],"purpose":"payroll"}`, salary))
	r0 := ans.body["results"].([]any)[0].(map[string]any)
	if ans.status != 200 || r0["status"] != "denied" || r0["value"] != nil || r0["reason"] == "" {
		t.Fatalf("without a grant: %s", ans.raw)
	}
	g := a.do("POST", "/v1/grants", adminToken, grant)
	if g.status != 201 || g.body["state"] != "live" || g.body["uses"] != float64(0) {
		t.Fatalf("create grant: %d %s", g.status, g.raw)
	}
	ans = a.do("POST", "/v1/detokenize", agent, fmt.Sprintf(`{"tokens":[%q,%q,"tok_NOTATOKENAAAAAAAAAAAAAAAAA"],"purpose":"payroll"}`, salary, card))
	var out struct {
		Results []struct {
			Token, Status, Reason string
			Value                 json.RawMessage
		}
	}
	json.Unmarshal([]byte(ans.raw), &out)
	if len(out.Results) != 3 || out.Results[0].Status != "ok" || string(out.Results[0].Value) != "50000" ||
		out.Results[1].Status != "denied" || out.Results[2].Status != "not_found" || out.Results[0].Token != salary {
		t.Fatalf("with a grant: %s", ans.raw)
	}
	// Too many tokens: 413.
	many := make([]string, 1001)
	for i := range many {
		many[i] = salary
	}
	body, _ := json.Marshal(map[string]any{"tokens": many, "purpose": "payroll"})
	if ans := a.do("POST", "/v1/detokenize", agent, string(body)); ans.status != http.StatusRequestEntityTooLarge || ans.errorCode(t) != "too_many_tokens" {
		t.Fatalf("1001 tokens: %d %s", ans.status, ans.raw)
	}
	// The grant list shows the use; revocation stops reveals at once.
	list := a.do("GET", "/v1/grants?principal_id="+agentID, adminToken, "")
	grants := list.body["grants"].([]any)
	if len(grants) != 1 || grants[0].(map[string]any)["uses"] != float64(1) {
		t.Fatalf("grant list: %s", list.raw)
	}
	if ans := a.do("DELETE", "/v1/grants/"+g.body["id"].(string), adminToken, ""); ans.status != 204 {
		t.Fatalf("revoke: %d", ans.status)
	}
	ans = a.do("POST", "/v1/detokenize", agent, fmt.Sprintf(`{"tokens":[%q],"purpose":"payroll"}`, salary))
	if strings.Contains(ans.raw, "50000") || !strings.Contains(ans.raw, `"denied"`) {
		t.Fatalf("after revoke: %s", ans.raw)
	}

	// The auditor sees every step, and the chain verifies.
	log := a.do("GET", "/v1/audit?action=detokenize", auditor, "")
	entries := log.body["entries"].([]any)
	if log.status != 200 || len(entries) != 3 {
		t.Fatalf("detokenize entries: %s", log.raw)
	}
	for _, k := range []string{"seq", "time", "actor", "action", "decision", "collection", "fields", "record_ids", "purpose", "grant_id", "approval_id", "request_id", "prev_hash", "hash"} {
		if _, ok := entries[1].(map[string]any)[k]; !ok {
			t.Errorf("audit entry lacks %q", k)
		}
	}
	if strings.Contains(log.raw, "50000") || strings.Contains(log.raw, salary) {
		t.Fatalf("audit log holds a value or a raw token: %s", log.raw)
	}
	v := a.do("GET", "/v1/audit/verify", auditor, "")
	if v.status != 200 || v.body["ok"] != true || v.body["entries"].(float64) < 10 {
		t.Fatalf("verify: %s", v.raw)
	}
	page := a.do("GET", "/v1/audit?limit=2&actor="+agentID, auditor, "")
	if len(page.body["entries"].([]any)) != 2 || page.body["next"] == nil {
		t.Fatalf("paged, filtered by actor: %s", page.raw)
	}
}
