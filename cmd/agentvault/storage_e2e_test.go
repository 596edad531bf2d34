package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentvault/agentvault/internal/vaulttest"
)

// smallFilesystem mounts a tmpfs of size bytes for the test and unmounts
// it at the end (after the servers using it stop: cleanups run in reverse
// order). It needs root, which the README's test command has; elsewhere
// the test is skipped, except where the suite must run whole.
func smallFilesystem(t *testing.T, size string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "small")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		vaulttest.Missing(t, "AGENTVAULT_REQUIRE_VAULT", fmt.Sprintf("mount a tmpfs for the full-disk test (needs root): %v %s", err, out))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
	return dir
}

// TestStorageFull: on a data directory with little room, a stream of
// writes is refused with 503 storage_full before the disk fills (instead
// of the process dying of SIGBUS in Badger's mapped files); reads and
// detokenizes go on; /readyz and the metrics say so; when space returns
// writes work again without a restart, and nothing acknowledged is lost.
func TestStorageFull(t *testing.T) {
	t.Parallel()
	dir := smallFilesystem(t, "64m")
	args := []string{"--memtable-size", "2097152", "--storage-reserve", "25165824"}
	s := start(t, dir, adminEnv, args...)
	writer, _, tokens, agent := seedRevealable(s, "name")
	note := make([]byte, 2048)
	var acked []string
	// Write until refusals hold: right after the first one Badger's
	// compactions may still free space (old tables deleted), and writes
	// are let through again while there is room.
	refusals, full := 0, false
	for i := 0; i < 3000 && !full; i++ {
		var recs []map[string]any
		for range 20 {
			rand.Read(note)
			recs = append(recs, map[string]any{"fields": map[string]any{"dept": "fill", "name": hex.EncodeToString(note)}})
		}
		status, out := s.callQuiet("POST", "/v1/collections/hr/records", writer, map[string]any{"records": recs})
		switch {
		case status == 201:
			refusals = 0
			for _, r := range out["records"].([]any) {
				acked = append(acked, r.(map[string]any)["id"].(string))
			}
		case status == 503 && out["error"].(map[string]any)["code"] == "storage_full":
			refusals++
			full = refusals == 10
			time.Sleep(200 * time.Millisecond)
		default:
			t.Fatalf("write %d: %d %v", i, status, out)
		}
	}
	if !full || len(acked) == 0 {
		t.Fatalf("writes never stayed refused (%d acknowledged records): the filesystem did not fill", len(acked))
	}
	// Still up, still reading and revealing (reveals write an audit entry:
	// they go on down to a quarter of the reserve; Badger's compactions
	// may hold some of it for a moment).
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		status, det := s.callQuiet("POST", "/v1/detokenize", agent, map[string]any{"tokens": []any{tokens["name"]}, "purpose": "e2e"})
		if status == 200 && det["results"].([]any)[0].(map[string]any)["value"] == secrets[0] {
			break
		}
		if time.Now().After(end) {
			du, _ := exec.Command("du", "-ak", dir).CombinedOutput()
			df, _ := exec.Command("df", "-k", dir).CombinedOutput()
			t.Fatalf("detokenize on a full disk: %d %v\n%s\n%s", status, det, du, df)
		}
	}
	s.must(200, "GET", "/v1/collections/hr/records/"+acked[len(acked)-1], writer, nil)
	if status, out := s.call("GET", "/readyz", "", nil); status != 503 || out["error"].(map[string]any)["code"] != "storage_full" {
		t.Fatalf("/readyz on a full disk: %d %v", status, out)
	}
	resp, err := testHTTP.Get(s.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"agentvault_storage_free_bytes ", "agentvault_storage_reserve_bytes 2.5165824e+07", "agentvault_storage_full_refusals_total "} {
		if !strings.Contains(string(m), want) {
			t.Fatalf("metrics lack %q", want)
		}
	}

	// Space returns: writes work again, no restart.
	if out, err := exec.Command("mount", "-o", "remount,size=256m", dir).CombinedOutput(); err != nil {
		t.Fatalf("grow the tmpfs: %v %s", err, out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		status, out := writeOne(s, writer, 1)
		if status == 201 {
			id, _ := firstRecord(out)
			acked = append(acked, id)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("writes did not resume after space returned: %d %v", status, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.must(200, "GET", "/readyz", "", nil)

	// Nothing acknowledged was lost, across a restart too.
	s.stop()
	s = start(t, dir, adminEnv, args...)
	for _, id := range acked {
		if status, _ := s.call("GET", "/v1/collections/hr/records/"+id, writer, nil); status != 200 {
			t.Fatalf("acknowledged record %s lost: %d", id, status)
		}
	}
	ops := s.must(201, "POST", "/v1/principals", admin, map[string]any{"name": "aud", "roles": []string{"auditor"}})["token"].(string)
	if v := s.must(200, "GET", "/v1/audit/verify", ops, nil); v["ok"] != true {
		t.Fatalf("audit after the full disk: %v", v)
	}
	s.stop()
	if s.err != nil {
		t.Fatalf("exit: %v", s.err)
	}
	t.Logf("%d records acknowledged before and after the disk filled", len(acked))
}
