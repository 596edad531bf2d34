package main

import (
	"testing"
)

// TestLeastPrivilegeReadsThroughTheBinary: an agent finds and reads
// records through the real binary, seeing only what its grant names, and
// every read is in the audit log with its purpose.
func TestLeastPrivilegeReadsThroughTheBinary(t *testing.T) {
	t.Parallel()
	s := start(t, t.TempDir(), adminEnv)
	s.must(201, "POST", "/v1/collections", admin, map[string]any{"name": "staff", "fields": []map[string]any{
		{"name": "dept", "type": "string", "index": true},
		{"name": "phone", "type": "string"},
		{"name": "email", "type": "string", "sensitive": true, "token": "deterministic"},
		{"name": "salary", "type": "number", "sensitive": true},
	}})
	writer := s.must(201, "POST", "/v1/principals", admin, map[string]any{"name": "app", "roles": []string{"writer"}})["token"].(string)
	auditor := s.must(201, "POST", "/v1/principals", admin, map[string]any{"name": "aud", "roles": []string{"auditor"}})["token"].(string)
	agent, agentID := newAgent(s)
	var recs []map[string]any
	for i, d := range []string{"eng", "ops", "eng"} {
		recs = append(recs, map[string]any{"fields": map[string]any{"dept": d, "phone": "555-0100", "email": []string{"a@x.io", "b@x.io", "c@x.io"}[i], "salary": 100 + i}})
	}
	s.must(201, "POST", "/v1/collections/staff/records", writer, map[string]any{"records": recs})

	if cs := s.must(200, "GET", "/v1/collections", agent, nil)["collections"].([]any); len(cs) != 0 {
		t.Fatalf("an agent without a grant sees %v", cs)
	}
	if status, _ := s.call("GET", "/v1/collections/staff/records?purpose=hr", agent, nil); status != 404 {
		t.Fatalf("listing without a grant: %d", status)
	}
	s.must(201, "POST", "/v1/grants", admin, map[string]any{"principal_id": agentID, "collection": "staff", "fields": []string{"dept", "email"}, "purpose": "hr", "ttl": "1h", "reveal": "none"})
	page := s.must(200, "GET", "/v1/collections/staff/records?purpose=hr&limit=2", agent, nil)
	got := page["records"].([]any)
	if len(got) != 2 || page["next"] == nil {
		t.Fatalf("first page: %v", page)
	}
	fields := got[0].(map[string]any)["fields"].(map[string]any)
	if len(fields) != 2 || fields["dept"] == nil || fields["email"] == nil {
		t.Fatalf("an agent sees %v", fields)
	}
	found := s.must(200, "POST", "/v1/collections/staff/records/search", agent, map[string]any{"where": map[string]any{"dept": "eng"}, "purpose": "hr"})
	if len(found["records"].([]any)) != 2 {
		t.Fatalf("search by an indexed field: %v", found)
	}
	if status, out := s.call("POST", "/v1/collections/staff/records/search", agent, map[string]any{"where": map[string]any{"email": "a@x.io"}, "purpose": "hr"}); status != 403 {
		t.Fatalf("search by value without a plain grant: %d %v", status, out)
	}
	byToken := s.must(200, "POST", "/v1/collections/staff/records/search", agent, map[string]any{"where": map[string]any{"email": fields["email"]}, "purpose": "hr"})
	if len(byToken["records"].([]any)) != 1 {
		t.Fatalf("search by token: %v", byToken)
	}
	log := s.must(200, "GET", "/v1/audit?action=records.search", auditor, nil)["entries"].([]any)
	if len(log) != 3 || log[0].(map[string]any)["purpose"] != "hr" {
		t.Fatalf("search entries: %v", log)
	}
	if reads := s.must(200, "GET", "/v1/audit?action=records.read", auditor, nil)["entries"].([]any); len(reads) != 2 {
		t.Fatalf("read entries: %v", reads)
	}

	// A writer moves a record to another department; the index follows.
	id := got[0].(map[string]any)["id"].(string)
	upd := s.must(200, "PATCH", "/v1/collections/staff/records/"+id, writer, map[string]any{"fields": map[string]any{"dept": "legal", "phone": nil}})
	if f := upd["fields"].(map[string]any); f["dept"] != "legal" || f["phone"] != nil {
		t.Fatalf("updated record: %v", upd)
	}
	legal := s.must(200, "POST", "/v1/collections/staff/records/search", agent, map[string]any{"where": map[string]any{"dept": "legal"}, "purpose": "hr"})
	if r := legal["records"].([]any); len(r) != 1 || r[0].(map[string]any)["id"] != id {
		t.Fatalf("search after the update: %v", legal)
	}
	if l := s.must(200, "GET", "/v1/audit?action=records.update", auditor, nil)["entries"].([]any); len(l) != 1 {
		t.Fatalf("update entries: %v", l)
	}
}
