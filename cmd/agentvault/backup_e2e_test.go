package main

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentvault/agentvault/internal/vaulttest"
)

// TestBackupRestoreWithRealVault takes an online backup through the CLI
// from the binary with its KEK in the real Vault while a writer keeps
// writing, restores it into a new data directory, and starts a second
// server there with the same Transit key: records read back with the same
// tokens, the grant still reveals them, the audit chain verifies and names
// the backup, and the restored server takes writes. Damaged files and an
// occupied target are refused.
func TestBackupRestoreWithRealVault(t *testing.T) {
	t.Parallel()
	v := vaulttest.Start(t)
	env := append([]string{"VAULT_ADDR=" + v.Addr, "VAULT_TOKEN=" + v.Token}, adminEnv...)
	vaultArgs := []string{"--kms", "vault", "--vault-key", "av-backup"}
	dir := t.TempDir()
	s := start(t, dir, env, vaultArgs...)
	writer, id, tokens, agent := seedRevealable(s, "name", "card")
	op := s.must(201, "POST", "/v1/principals", admin, map[string]any{"name": "ops", "roles": []string{"operator", "auditor"}})
	operator := op["token"].(string)

	// A writer keeps writing while the backup streams.
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if status, out := s.callQuiet("POST", "/v1/collections/hr/records", writer, map[string]any{"records": []map[string]any{{"fields": map[string]any{"dept": "during", "note": "x"}}}}); status != 201 {
				t.Errorf("write during backup: %d %v", status, out)
				return
			}
		}
	}()
	backup := filepath.Join(t.TempDir(), "vault.avbackup")
	stdout, stderr, err := s.cli(operator, "backup", "--out", backup)
	close(stop)
	<-done
	if err != nil || !strings.Contains(stdout, "vault-transit") || !strings.Contains(stdout, "recorded as audit entry") {
		t.Fatalf("backup: %v\n%s%s", err, stdout, stderr)
	}
	if _, err := os.Stat(backup + ".partial"); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("the partial file was left beside the backup")
	}
	if _, _, err := s.cli("", "backup", "--out", filepath.Join(t.TempDir(), "x")); err == nil {
		t.Fatal("backup without a token succeeded")
	}
	if _, stderr, err := s.cli(writer, "backup", "--out", filepath.Join(t.TempDir(), "x")); err == nil || !strings.Contains(stderr, "403 forbidden") {
		t.Fatalf("backup with a writer's token: %v %s", err, stderr)
	}
	logs := s.logs()

	// The KEK flags go right after the command: flags end at the first
	// positional argument.
	withKEK := func(args ...string) []string {
		return append(append([]string{args[0]}, vaultArgs...), args[1:]...)
	}
	if code, out := runCLIEnv(t, env, withKEK("backup", "--check", backup)...); code != 0 || !strings.Contains(out, "MAC verifies") {
		t.Fatalf("backup --check: %d %s", code, out)
	}
	if code, out := runCLI(t, "backup", "--check", backup); code != 1 || !strings.Contains(out, "needs the KEK") {
		t.Fatalf("backup --check without the KEK: %d %s", code, out)
	}
	raw, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	damaged := func(name string, b []byte) string {
		p := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cut := damaged("cut.avbackup", raw[:len(raw)-100])
	changed := damaged("changed.avbackup", []byte(strings.Replace(string(raw), `"provider":"vault-transit"`, `"provider":"vault-transiT"`, 1)))
	for _, tc := range []struct{ file, want string }{{cut, "truncated or corrupt"}, {changed, "not authentic"}} {
		if code, out := runCLIEnv(t, env, withKEK("backup", "--check", tc.file)...); code != 1 || !strings.Contains(out, tc.want) {
			t.Fatalf("backup --check of %s: %d %s", filepath.Base(tc.file), code, out)
		}
	}
	if code, out := runCLIEnv(t, env, withKEK("restore", "--data-dir", dir, backup)...); code != 1 || !strings.Contains(out, "already holds a database") {
		t.Fatalf("restore over the live data directory: %d %s", code, out)
	}
	restored := t.TempDir()
	for _, bad := range []string{cut, changed} {
		if code, out := runCLIEnv(t, env, withKEK("restore", "--data-dir", restored, bad)...); code != 1 || !strings.Contains(out, "nothing was restored") {
			t.Fatalf("restore of %s: %d %s", filepath.Base(bad), code, out)
		}
	}
	// The audit key pinned: the server's own is accepted, another refused.
	pub := filepath.Join(t.TempDir(), "audit.pub")
	status, pubBody := s.raw("GET", "/v1/audit/pubkey", operator)
	if status != 200 || os.WriteFile(pub, pubBody, 0o600) != nil {
		t.Fatalf("audit pubkey: %d", status)
	}
	otherPub := damaged("other.pub", []byte(`{"primaryKeyId":1,"key":[]}`))
	if code, out := runCLIEnv(t, env, withKEK("restore", "--data-dir", t.TempDir(), "--pubkey", otherPub, backup)...); code != 1 || !strings.Contains(out, "nothing was restored") {
		t.Fatalf("restore pinned to another audit key: %d %s", code, out)
	}
	code, restoreOut := runCLIEnv(t, env, withKEK("restore", "--data-dir", restored, "--pubkey", pub, backup)...)
	if code != 0 || !strings.Contains(restoreOut, "the audit chain verifies") || !strings.Contains(restoreOut, "MAC verifies") {
		t.Fatalf("restore: %d %s", code, restoreOut)
	}

	// Another Transit key cannot read the restored keysets: the server
	// refuses to start instead of answering 503 to every call.
	if out, err := serveFails(restored, env, "--kms", "vault", "--vault-key", "av-other"); err == nil || !strings.Contains(out, "the KEK unwraps none of the stored keysets") {
		t.Fatalf("start on the restored copy with another Transit key: %v\n%s", err, out)
	}

	// A second server on the restored copy, with the same Transit key.
	r := start(t, restored, env, vaultArgs...)
	got := r.must(200, "GET", "/v1/collections/hr/records/"+id, writer, nil)
	for f, tok := range tokens {
		if got["fields"].(map[string]any)[f] != tok {
			t.Errorf("field %s after restore = %v, want %v", f, got["fields"].(map[string]any)[f], tok)
		}
	}
	det := r.must(200, "POST", "/v1/detokenize", agent, map[string]any{"tokens": []any{tokens["name"], tokens["card"]}, "purpose": "e2e"})
	res := det["results"].([]any)
	if res[0].(map[string]any)["value"] != secrets[0] || res[1].(map[string]any)["value"] != secrets[1] {
		t.Fatalf("detokenize on the restored server: %v", det)
	}
	if v := r.must(200, "GET", "/v1/audit/verify", operator, nil); v["ok"] != true {
		t.Fatalf("restored audit: %v", v)
	}
	for _, action := range []string{"backup.create", "backup.restore"} {
		if l := r.must(200, "GET", "/v1/audit?action="+action, operator, nil); len(l["entries"].([]any)) != 1 {
			t.Fatalf("the restored audit log does not hold one %s entry: %v", action, l)
		}
	}
	if status, out := writeOne(r, writer, 9); status != 201 {
		t.Fatalf("write on the restored server: %d %v", status, out)
	}
	s.stop()
	r.stop()
	assertNoSecrets(t, restored, logs, r.logs(), restoreOut)
}

// TestBackupCLIRefusesABrokenTransfer: a server that cuts the stream short
// leaves no backup file, only an error.
func TestBackupCLIRefusesABrokenTransfer(t *testing.T) {
	t.Parallel()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("agentvault-backup 2\n{\"format\":2,\"mac_key\":\"AAAA\"}\n\x1f\x8b\x08\x00\x00\x00\x00\x00"))
	}))
	defer ts.Close()
	out := filepath.Join(t.TempDir(), "b.avbackup")
	cmd := command(2*time.Minute, avBinary, "backup", "--out", out, "--server", ts.URL)
	cmd.Env = append(os.Environ(), "AGENTVAULT_TOKEN=x")
	msg, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(msg), "does not check") {
		t.Fatalf("backup of a cut stream: %v %s", err, msg)
	}
	if ents, _ := os.ReadDir(filepath.Dir(out)); len(ents) != 0 {
		t.Fatalf("a broken transfer left %v", ents)
	}

	// A FILE.partial planted as a symlink to another file is refused, not
	// followed: the file it points to is unchanged.
	victim := filepath.Join(t.TempDir(), "precious")
	if err := os.WriteFile(victim, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, out+".partial"); err != nil {
		t.Fatal(err)
	}
	cmd = command(2*time.Minute, avBinary, "backup", "--out", out, "--server", ts.URL)
	cmd.Env = append(os.Environ(), "AGENTVAULT_TOKEN=x")
	msg, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(msg), "already exists") {
		t.Fatalf("backup over a planted symlink: %v %s", err, msg)
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep me" {
		t.Fatalf("the symlink's target was written: %q", b)
	}
}

// serveFails runs the server expecting it to refuse to start, and returns
// its output.
func serveFails(dataDir string, env []string, args ...string) (string, error) {
	cmd := exec.Command(avBinary, append([]string{"serve", "--listen", "127.0.0.1:0", "--data-dir", dataDir}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	done := make(chan struct{})
	timer := time.AfterFunc(30*time.Second, func() { cmd.Process.Kill(); close(done) })
	out, err := cmd.CombinedOutput()
	if !timer.Stop() {
		<-done
		return string(out), nil // it did not refuse: it kept running
	}
	return string(out), err
}

// TestRestoreNeedsItsKEK: a vault on the development KEK, backed up and
// restored without dev-kek.json, is refused at start (and no new KEK file
// is left beside it); with the file copied over, it reads and reveals.
func TestRestoreNeedsItsKEK(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := start(t, dir, adminEnv)
	writer, id, tokens, agent := seedRevealable(s, "name")
	op := s.must(201, "POST", "/v1/principals", admin, map[string]any{"name": "ops", "roles": []string{"operator"}})
	backup := filepath.Join(t.TempDir(), "b.avbackup")
	if stdout, stderr, err := s.cli(op["token"].(string), "backup", "--out", backup); err != nil || !strings.Contains(stdout, "(local, version 1") {
		t.Fatalf("backup: %v\n%s%s", err, stdout, stderr)
	}
	s.stop()

	restored := t.TempDir()
	if code, out := runCLI(t, "restore", "--data-dir", restored, backup); code != 1 || !strings.Contains(out, "no development KEK") {
		t.Fatalf("restore without the KEK: exit %d\n%s", code, out)
	}
	oldKEK := filepath.Join(dir, "dev-kek.json")
	if code, out := runCLI(t, "restore", "--data-dir", restored, "--dev-kek", oldKEK, backup); code != 0 || !strings.Contains(out, "copy "+oldKEK) {
		t.Fatalf("restore: exit %d\n%s", code, out)
	}
	msg, err := serveFails(restored, adminEnv)
	if err == nil || !strings.Contains(msg, "the KEK unwraps none of the stored keysets") || !strings.Contains(msg, "copy dev-kek.json") {
		t.Fatalf("start without the KEK file: %v\n%s", err, msg)
	}
	if _, err := os.Stat(filepath.Join(restored, "dev-kek.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused start left a new KEK file behind: %v", err)
	}

	copyFile(t, filepath.Join(dir, "dev-kek.json"), filepath.Join(restored, "dev-kek.json"))
	r := start(t, restored, adminEnv)
	got := r.must(200, "GET", "/v1/collections/hr/records/"+id, writer, nil)
	if got["fields"].(map[string]any)["name"] != tokens["name"] {
		t.Fatalf("restored record: %v", got)
	}
	det := r.must(200, "POST", "/v1/detokenize", agent, map[string]any{"tokens": []any{tokens["name"]}, "purpose": "e2e"})
	if det["results"].([]any)[0].(map[string]any)["value"] != secrets[0] {
		t.Fatalf("detokenize after restore: %v", det)
	}
	r.stop()
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
