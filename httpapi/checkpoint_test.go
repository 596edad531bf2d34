package httpapi_test

import (
	"net/url"
	"strings"
	"testing"
)

// TestAuditCheckpointOverHTTP: an auditor saves a signed checkpoint and
// later holds the log to it through GET /v1/audit/verify?checkpoint=.
func TestAuditCheckpointOverHTTP(t *testing.T) {
	t.Parallel()
	a := newAPI(t, 0)
	writer, _, auditor, _ := a.setup()
	cp := a.do("GET", "/v1/audit/checkpoint", auditor, "")
	if cp.status != 200 || cp.body["seq"] == nil || cp.body["signature"] == nil {
		t.Fatalf("checkpoint: %d %s", cp.status, cp.raw)
	}
	v := a.do("GET", "/v1/audit/verify?checkpoint="+url.QueryEscape(cp.raw), auditor, "")
	if v.status != 200 || v.body["ok"] != true || v.body["witnessed"] != float64(1) || v.body["unsigned_entries"] != float64(0) {
		t.Fatalf("verify with the saved checkpoint: %d %s", v.status, v.raw)
	}
	forged := strings.Replace(cp.raw, `"hash":"`, `"hash":"0`, 1)
	if v := a.do("GET", "/v1/audit/verify?checkpoint="+url.QueryEscape(forged), auditor, ""); v.status != 200 || v.body["ok"] != false {
		t.Fatalf("verify with a forged checkpoint: %d %s", v.status, v.raw)
	}
	a.expectErrors(t, []errCase{
		{"checkpoint needs the auditor role", "GET", "/v1/audit/checkpoint", writer, "", 403, "forbidden"},
		{"checkpoint that does not parse", "GET", "/v1/audit/verify?checkpoint=nope", auditor, "", 400, "invalid_checkpoint"},
		{"checkpoint without a signature", "GET", "/v1/audit/verify?checkpoint=" + url.QueryEscape(`{"seq":1,"hash":"ab"}`), auditor, "", 400, "invalid_checkpoint"},
	})
}
