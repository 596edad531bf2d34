package httpapi_test

import (
	"fmt"
	"testing"
	"time"
)

// TestKeysOverHTTP rotates, re-encrypts and retires keys through the API,
// with every refusal's status and code.
func TestKeysOverHTTP(t *testing.T) {
	t.Parallel()
	a := newAPI(t, 0)
	writer, agent, _, _ := a.setup()
	_, operator := a.principal("ops", "operator")

	st := a.do("GET", "/v1/keys", operator, "")
	if st.status != 200 {
		t.Fatalf("key status: %s", st.raw)
	}
	kek := st.body["kek"].(map[string]any)
	col := st.body["collections"].([]any)[0].(map[string]any)
	k1 := col["primary_key_id"].(float64)
	if kek["provider"] != "local" || kek["version"] != float64(1) || col["collection"] != "staff" {
		t.Fatalf("key status: %s", st.raw)
	}
	rot := a.do("POST", "/v1/keys/rotate", operator, `{"target":"dek","collection":"staff"}`)
	if rot.status != 200 || rot.body["previous_key_id"] != k1 {
		t.Fatalf("rotate dek: %s", rot.raw)
	}
	if r := a.do("POST", "/v1/keys/rotate", operator, `{"target":"kek"}`); r.status != 200 || r.body["kek"].(map[string]any)["version"] != float64(2) {
		t.Fatalf("rotate kek: %s", r.raw)
	}
	retire := func(path string, id float64) string {
		return fmt.Sprintf(`{"collection":"staff","key_id":%d}`, uint32(id))
	}
	a.expectErrors(t, []errCase{
		{"agent cannot read keys", "GET", "/v1/keys", agent, "", 403, "forbidden"},
		{"writer cannot rotate", "POST", "/v1/keys/rotate", writer, `{"target":"kek"}`, 403, "forbidden"},
		{"bad target", "POST", "/v1/keys/rotate", operator, `{"target":"all"}`, 400, "invalid_target"},
		{"dek without collection", "POST", "/v1/keys/rotate", operator, `{"target":"dek"}`, 400, "invalid_collection"},
		{"kek with collection", "POST", "/v1/keys/rotate", operator, `{"target":"kek","collection":"staff"}`, 400, "invalid_collection"},
		{"dek of unknown collection", "POST", "/v1/keys/rotate", operator, `{"target":"dek","collection":"nope"}`, 404, "collection_not_found"},
		{"reencrypt without collection", "POST", "/v1/keys/reencrypt", operator, `{}`, 400, "invalid_collection"},
		{"disable without key id", "POST", "/v1/keys/disable", operator, `{"collection":"staff"}`, 400, "invalid_request"},
		{"disable a key in use", "POST", "/v1/keys/disable", operator, retire("disable", k1), 409, "key_in_use"},
		{"destroy a key in use", "POST", "/v1/keys/destroy", operator, retire("destroy", k1), 409, "key_in_use"},
		{"unknown job", "GET", "/v1/jobs/nope", operator, "", 404, "job_not_found"},
	})
	job := a.do("POST", "/v1/keys/reencrypt", operator, `{"collection":"staff"}`)
	id, _ := job.body["job_id"].(string)
	if job.status != 202 || id == "" || job.header.Get("Location") != "/v1/jobs/"+id {
		t.Fatalf("reencrypt: %d %s", job.status, job.raw)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		j := a.do("GET", "/v1/jobs/"+id, operator, "")
		if j.body["status"] == "done" {
			if j.body["done"] != j.body["total"] || j.body["total"] != float64(2) {
				t.Fatalf("job: %s", j.raw)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("job did not finish: %s", j.raw)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, step := range []string{"disable", "destroy"} {
		if r := a.do("POST", "/v1/keys/"+step, operator, retire(step, k1)); r.status != 200 {
			t.Fatalf("%s: %s", step, r.raw)
		}
	}
	st = a.do("GET", "/v1/keys", operator, "")
	keys := st.body["collections"].([]any)[0].(map[string]any)["data_keys"].([]any)
	states := map[float64]string{}
	for _, k := range keys {
		km := k.(map[string]any)
		states[km["key_id"].(float64)] = km["state"].(string)
	}
	if states[k1] != "destroyed" || len(states) != 2 {
		t.Fatalf("after destroy: %s", st.raw)
	}
}
