package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestReviewReproductionsThroughTheBinary replays the security review's
// reproductions that come in over HTTP against the real binary: an
// approval stretched to a token no approver saw, an empty record_ids
// list, a bidi override in a purpose, a number a float64 rounds, an email
// whose token could never be presented, and a bootstrap token brought
// back after its admin was revoked.
func TestReviewReproductionsThroughTheBinary(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := start(t, dir, adminEnv)
	s.must(201, "POST", "/v1/collections", admin, map[string]any{"name": "hr", "fields": []map[string]any{
		{"name": "ssn", "type": "string", "sensitive": true, "approval": "always"},
		{"name": "salary", "type": "number", "sensitive": true, "token": "deterministic", "approval_above": 150000},
		{"name": "email", "type": "string", "sensitive": true, "token": "format_preserving", "format": "email"},
	}})
	writer := s.must(201, "POST", "/v1/principals", admin, map[string]any{"name": "app", "roles": []string{"writer"}})["token"].(string)
	approver := s.must(201, "POST", "/v1/principals", admin, map[string]any{"name": "carol", "roles": []string{"approver"}})["token"].(string)
	agent, agentID := newAgent(s)
	out := s.must(201, "POST", "/v1/collections/hr/records", writer, map[string]any{"records": []map[string]any{
		{"fields": map[string]any{"ssn": "111-11-1111"}}, {"fields": map[string]any{"ssn": "333-33-3333"}},
	}})
	recA, ssnA := firstRecord(out)
	recC := out["records"].([]any)[1].(map[string]any)
	ssnC := recC["fields"].(map[string]any)["ssn"]
	grant := func(records ...any) {
		s.must(201, "POST", "/v1/grants", admin, map[string]any{"principal_id": agentID, "collection": "hr", "fields": []string{"ssn"},
			"record_ids": records, "purpose": "payroll", "ttl": "1h", "reveal": "plain"})
	}

	// 1. The approval covers A only; C, granted later, is not in it.
	grant(recA)
	res := s.must(200, "POST", "/v1/detokenize", agent, map[string]any{"tokens": []any{ssnA["ssn"], ssnC}, "purpose": "payroll"})["results"].([]any)
	first, second := res[0].(map[string]any), res[1].(map[string]any)
	if first["status"] != "pending_approval" || second["status"] != "denied" {
		t.Fatalf("request: %v", res)
	}
	id := first["approval_id"].(string)
	s.must(200, "POST", "/v1/approvals/"+id+"/approve", approver, map[string]any{"reason": "A only"})
	grant(recC["id"])
	res = s.must(200, "POST", "/v1/detokenize", agent, map[string]any{"tokens": []any{ssnA["ssn"], ssnC}, "purpose": "payroll", "approval_id": id})["results"].([]any)
	if r := res[0].(map[string]any); r["status"] != "ok" || r["value"] != "111-11-1111" {
		t.Fatalf("approved token: %v", r)
	}
	if r := res[1].(map[string]any); r["status"] != "pending_approval" || r["value"] != nil {
		t.Fatalf("a token no approver saw: %v", r)
	}

	// 9, 17, 10, 7: refused at the door, nothing stored.
	for _, c := range []struct {
		name, path string
		body       map[string]any
		code       string
	}{
		{"empty record_ids", "/v1/grants", map[string]any{"principal_id": agentID, "collection": "hr", "fields": []string{"ssn"}, "record_ids": []any{}, "purpose": "p", "ttl": "1h"}, "invalid_record_ids"},
		{"bidi override in a purpose", "/v1/grants", map[string]any{"principal_id": agentID, "collection": "hr", "fields": []string{"ssn"}, "purpose": "pay\u202eroll", "ttl": "1h"}, "invalid_purpose"},
		{"2^53+1", "/v1/collections/hr/records", map[string]any{"records": []map[string]any{{"fields": map[string]any{"salary": json.Number("9007199254740993")}}}}, "invalid_value"},
		{"just above the threshold, rounded", "/v1/collections/hr/records", map[string]any{"records": []map[string]any{{"fields": map[string]any{"salary": json.Number("150000.00000000001")}}}}, "invalid_value"},
		{"internationalised email domain", "/v1/collections/hr/records", map[string]any{"records": []map[string]any{{"fields": map[string]any{"email": "x@bücher.de"}}}}, "invalid_value"},
	} {
		token := admin
		if c.path != "/v1/grants" {
			token = writer
		}
		status, got := s.call("POST", c.path, token, c.body)
		if status != 400 || got["error"].(map[string]any)["code"] != c.code {
			t.Errorf("%s: %d %v", c.name, status, got)
		}
	}
	if status, got := s.call("POST", "/v1/detokenize", agent, map[string]any{"tokens": []any{"x"}, "purpose": "pay\nroll"}); status != 400 || got["error"].(map[string]any)["code"] != "invalid_purpose" {
		t.Fatalf("a purpose with a newline: %d %v", status, got)
	}

	// 3. The bootstrap admin revoked by another admin: the same
	// AGENTVAULT_ADMIN_TOKEN does not bring it back at the next start.
	boot := s.must(200, "GET", "/v1/me", admin, nil)
	admin2 := s.must(201, "POST", "/v1/principals", admin, map[string]any{"name": "second-admin", "roles": []string{"admin"}})["token"].(string)
	s.must(204, "DELETE", "/v1/principals/"+boot["id"].(string), admin2, nil)
	s.stop()
	msg, err := serveFails(dir, adminEnv)
	if err == nil || !strings.Contains(msg, "revoked") || strings.Contains(msg, admin) {
		t.Fatalf("start with a revoked admin's token: %v\n%s", err, msg)
	}
}
