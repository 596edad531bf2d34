package httpapi_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"
)

// TestAgentReadsThroughGrants, over HTTP: what an agent sees of
// collections and records is what its live grants for the purpose name.
func TestAgentReadsThroughGrants(t *testing.T) {
	t.Parallel()
	a := newAPI(t, 0)
	_, _, auditor, id := a.setup()
	botID, bot := a.principal("bot2", "agent")
	path := "/v1/collections/staff/records/" + id
	if ans := a.do("GET", "/v1/collections", bot, ""); ans.status != 200 || len(ans.body["collections"].([]any)) != 0 {
		t.Fatalf("collections without a grant: %s", ans.raw)
	}
	a.expectErrors(t, []errCase{
		{"schema without a grant", "GET", "/v1/collections/staff", bot, "", 404, "collection_not_found"},
		{"record without a grant", "GET", path + "?purpose=p", bot, "", 404, "collection_not_found"},
		{"record of a collection that does not exist", "GET", "/v1/collections/nope/records/" + id + "?purpose=p", bot, "", 404, "collection_not_found"},
		{"record without a purpose", "GET", path, bot, "", 400, "purpose_required"},
		{"purpose with a newline", "GET", path + "?purpose=a%0Ab", bot, "", 400, "invalid_purpose"},
	})
	if g := a.do("POST", "/v1/grants", adminToken, `{"principal_id":"`+botID+`","collection":"staff","fields":["name","card"],"purpose":"p","ttl":"1h","reveal":"none"}`); g.status != http.StatusCreated {
		t.Fatalf("grant: %d %s", g.status, g.raw)
	}
	rec := a.do("GET", path+"?purpose=p", bot, "")
	var fields []string
	for f := range rec.body["fields"].(map[string]any) {
		fields = append(fields, f)
	}
	slices.Sort(fields)
	if rec.status != 200 || !slices.Equal(fields, []string{"card", "name"}) || rec.body["fields"].(map[string]any)["name"] != "Ann" {
		t.Fatalf("record under the grant: %d %s", rec.status, rec.raw)
	}
	card := rec.body["fields"].(map[string]any)["card"].(string)
	det := a.do("POST", "/v1/detokenize", bot, `{"tokens":["`+card+`"],"purpose":"p"}`)
	if r := det.body["results"].([]any)[0].(map[string]any); r["status"] != "denied" {
		t.Fatalf("detokenize under reveal none: %s", det.raw)
	}
	schema := a.do("GET", "/v1/collections/staff?purpose=p", bot, "")
	if schema.status != 200 || len(schema.body["fields"].([]any)) != 2 {
		t.Fatalf("schema under the grant: %s", schema.raw)
	}
	// The reads are in the audit log, with their purpose and fields.
	log := a.do("GET", "/v1/audit?action=records.read&actor="+botID, auditor, "")
	var entries []struct {
		Decision, Purpose string
		Fields            []string
	}
	raw, _ := json.Marshal(log.body["entries"])
	json.Unmarshal(raw, &entries)
	last := entries[len(entries)-1]
	if len(entries) != 3 || last.Decision != "ok" || last.Purpose != "p" || !slices.Equal(last.Fields, []string{"card", "name"}) {
		t.Fatalf("read entries: %s", log.raw)
	}
}
