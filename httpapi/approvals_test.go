package httpapi_test

import (
	"fmt"
	"strings"
	"testing"
)

// TestApprovalsOverHTTP holds a reveal above a threshold, has a different
// person approve it, and redeems it once, checking every refusal's status
// and error code on the way.
func TestApprovalsOverHTTP(t *testing.T) {
	t.Parallel()
	a := newAPI(t, 0)
	const hr = `{"name":"hr","fields":[
	 {"name":"name","type":"string"},
	 {"name":"salary","type":"number","sensitive":true,"approval_above":100000}]}`
	if ans := a.do("POST", "/v1/collections", adminToken, hr); ans.status != 201 {
		t.Fatalf("collection: %s", ans.raw)
	}
	_, writer := a.principal("app", "writer")
	agentID, agent := a.principal("bot", "agent")
	otherID, other := a.principal("bot-2", "agent")
	dualID, dual := a.principal("dual", "agent", "approver")
	_, approver := a.principal("carol", "approver")
	ans := a.do("POST", "/v1/collections/hr/records", writer, `{"records":[{"fields":{"name":"Ann","salary":150000}},{"fields":{"name":"Bo","salary":100000}}]}`)
	if ans.status != 201 {
		t.Fatalf("records: %s", ans.raw)
	}
	recs := ans.body["records"].([]any)
	high := recs[0].(map[string]any)["fields"].(map[string]any)["salary"].(string)
	atLimit := recs[1].(map[string]any)["fields"].(map[string]any)["salary"].(string)
	for _, id := range []string{agentID, otherID, dualID} {
		g := fmt.Sprintf(`{"principal_id":%q,"collection":"hr","fields":["salary"],"purpose":"payroll","ttl":"1h","reveal":"plain"}`, id)
		if ans := a.do("POST", "/v1/grants", adminToken, g); ans.status != 201 {
			t.Fatalf("grant: %s", ans.raw)
		}
	}
	detok := func(token, body string) answer { return a.do("POST", "/v1/detokenize", token, body) }
	req := fmt.Sprintf(`{"tokens":[%q],"purpose":"payroll"}`, high)

	// At the threshold: revealed. Above it: held, nothing revealed.
	if ans := detok(agent, fmt.Sprintf(`{"tokens":[%q],"purpose":"payroll"}`, atLimit)); !strings.Contains(ans.raw, `"status":"ok"`) || !strings.Contains(ans.raw, `"value":100000`) {
		t.Fatalf("salary = threshold: %s", ans.raw)
	}
	ans = detok(agent, req)
	res := ans.body["results"].([]any)[0].(map[string]any)
	id, _ := res["approval_id"].(string)
	if ans.status != 200 || res["status"] != "pending_approval" || id == "" || strings.Contains(ans.raw, "150000") {
		t.Fatalf("salary above the threshold: %s", ans.raw)
	}
	ans = detok(dual, req)
	dualApproval := ans.body["results"].([]any)[0].(map[string]any)["approval_id"].(string)

	list := a.do("GET", "/v1/approvals?status=pending", approver, "")
	if list.status != 200 || len(list.body["approvals"].([]any)) != 2 || strings.Contains(list.raw, "150000") {
		t.Fatalf("pending list: %s", list.raw)
	}
	// limit keeps the newest: the dual principal asked last.
	newest := a.do("GET", "/v1/approvals?limit=1", approver, "")
	if got := newest.body["approvals"].([]any); newest.status != 200 || len(got) != 1 || got[0].(map[string]any)["id"] != dualApproval {
		t.Fatalf("limit=1: %s", newest.raw)
	}
	redeem := fmt.Sprintf(`{"tokens":[%q],"purpose":"payroll","approval_id":%q}`, high, id)
	a.expectErrors(t, []errCase{
		{"writer cannot list approvals", "GET", "/v1/approvals", writer, "", 403, "forbidden"},
		{"bad status filter", "GET", "/v1/approvals?status=maybe", approver, "", 400, "invalid_status"},
		{"zero limit", "GET", "/v1/approvals?limit=0", approver, "", 400, "invalid_limit"},
		{"limit not a number", "GET", "/v1/approvals?limit=ten", approver, "", 400, "invalid_limit"},
		{"unknown approval", "GET", "/v1/approvals/nope", approver, "", 404, "approval_not_found"},
		{"another agent cannot see it", "GET", "/v1/approvals/" + id, other, "", 404, "approval_not_found"},
		{"an agent cannot approve", "POST", "/v1/approvals/" + id + "/approve", other, `{"reason":"sure"}`, 403, "forbidden"},
		{"a reason is required", "POST", "/v1/approvals/" + id + "/approve", approver, `{}`, 400, "invalid_reason"},
		{"deny needs a reason too", "POST", "/v1/approvals/" + id + "/deny", approver, `{"reason":""}`, 400, "invalid_reason"},
		{"malformed decision", "POST", "/v1/approvals/" + id + "/approve", approver, `{"reason":`, 400, "malformed_json"},
		{"four eyes", "POST", "/v1/approvals/" + dualApproval + "/approve", dual, `{"reason":"mine"}`, 403, "four_eyes"},
		{"redeem before approval", "POST", "/v1/detokenize", agent, redeem, 409, "approval_not_redeemable"},
	})
	if got := a.do("GET", "/v1/approvals/"+id, agent, ""); got.status != 200 || got.body["status"] != "pending" || got.body["requester_id"] != agentID {
		t.Fatalf("requester reads its approval: %s", got.raw)
	}
	ok := a.do("POST", "/v1/approvals/"+id+"/approve", approver, `{"reason":"annual review, HR-42"}`)
	if ok.status != 200 || ok.body["status"] != "approved" || ok.body["reason"] != "annual review, HR-42" {
		t.Fatalf("approve: %s", ok.raw)
	}
	if ans := detok(other, redeem); ans.status != 403 || ans.errorCode(t) != "not_requester" {
		t.Fatalf("redeem by another agent: %s", ans.raw)
	}
	ans = detok(agent, redeem)
	if ans.status != 200 || !strings.Contains(ans.raw, `"status":"ok"`) || !strings.Contains(ans.raw, `"value":150000`) {
		t.Fatalf("redeem: %s", ans.raw)
	}
	if ans := detok(agent, redeem); ans.status != 409 || ans.errorCode(t) != "approval_not_redeemable" {
		t.Fatalf("second redemption: %s", ans.raw)
	}
	if got := a.do("GET", "/v1/approvals?status=redeemed", approver, ""); !strings.Contains(got.raw, id) {
		t.Fatalf("redeemed list: %s", got.raw)
	}
}
