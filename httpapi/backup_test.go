package httpapi_test

import (
	"bytes"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/agentvault/agentvault/internal/apitest"
	"github.com/agentvault/agentvault/keys"
	"github.com/agentvault/agentvault/vault"
)

// TestBackupOverHTTP: only an operator (or admin, who manages everything)
// takes a backup; it is a whole,
// checkable file, named for download, and the audit log says who took it.
func TestBackupOverHTTP(t *testing.T) {
	t.Parallel()
	kekFile := filepath.Join(t.TempDir(), "kek.json")
	a := &api{t: t, url: apitest.Start(t, apitest.Options{KEKFile: kekFile})}
	writer, agent, auditor, _ := a.setup()
	opID, operator := a.principal("ops", "operator")
	a.expectErrors(t, []errCase{
		{"no token", "GET", "/v1/backup", "", "", 401, "unauthenticated"},
		{"writer cannot take a backup", "GET", "/v1/backup", writer, "", 403, "forbidden"},
		{"agent cannot take a backup", "GET", "/v1/backup", agent, "", 403, "forbidden"},
		{"auditor cannot take a backup", "GET", "/v1/backup", auditor, "", 403, "forbidden"},
		{"backup is a GET", "POST", "/v1/backup", operator, "", 405, "method_not_allowed"},
	})
	b := a.do("GET", "/v1/backup", operator, "")
	if b.status != 200 || b.header.Get("Content-Type") != "application/vnd.agentvault.backup" ||
		!strings.HasPrefix(b.header.Get("Content-Disposition"), `attachment; filename="agentvault-`) {
		t.Fatalf("backup: %d %v", b.status, b.header)
	}
	kek, err := keys.OpenLocalKEK(kekFile)
	if err != nil {
		t.Fatal(err)
	}
	h, st, err := vault.CheckBackup(bytes.NewReader([]byte(b.raw)), keys.NewManager(kek))
	if err != nil || st.Entries == 0 || !st.Authenticated {
		t.Fatalf("the backup served does not check: %v %+v", err, st)
	}
	if got := b.header.Get("X-Agentvault-Audit-Seq"); got != strconv.FormatUint(h.AuditSeq, 10) {
		t.Fatalf("audit seq header %q, file header %d", got, h.AuditSeq)
	}
	if a := a.do("GET", "/v1/backup", adminToken, ""); a.status != 200 {
		t.Fatalf("admin backup: %d", a.status)
	}
	log := a.do("GET", "/v1/audit?action=backup.create", auditor, "")
	entries, _ := log.body["entries"].([]any)
	if log.status != 200 || len(entries) != 2 {
		t.Fatalf("backup audit entries: %s", log.raw)
	}
	e := entries[0].(map[string]any)
	if e["actor"] != opID || e["seq"] != float64(h.AuditSeq) || e["hash"] != h.AuditHash {
		t.Fatalf("backup audit entry %v does not match the file's header %+v", e, h)
	}
	m := a.do("GET", "/metrics", "", "")
	if !strings.Contains(m.raw, "agentvault_backup_last_success_timestamp_seconds 1.") {
		t.Fatalf("backup metric not set:\n%s", grepLines(m.raw, "agentvault_backup"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
