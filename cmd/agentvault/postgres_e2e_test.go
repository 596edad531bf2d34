package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/agentvault/agentvault/internal/pgtest"
	"github.com/agentvault/agentvault/internal/vaulttest"
)

// TestPostgresStoreThroughTheBinary: serve --store postgres with the KEK
// in the real dev Vault: records, grants and reveals work; a node killed
// with SIGKILL under write load loses no acknowledged write; the audit log
// verifies whole after the restart; nothing sensitive reaches the logs or
// the PostgreSQL cluster's files.
func TestPostgresStoreThroughTheBinary(t *testing.T) {
	t.Parallel()
	v := vaulttest.Start(t)
	db := pgtest.Database(t)
	dir := t.TempDir()
	env := append([]string{"VAULT_ADDR=" + v.Addr, "VAULT_TOKEN=" + v.Token, "AGENTVAULT_POSTGRES_URL=" + db}, adminEnv...)
	args := []string{"--store", "postgres", "--kms", "vault", "--vault-key", "av-pg"}
	s := start(t, dir, env, args...)
	s.must(200, "GET", "/readyz", "", nil)
	writer, id, tokens, agent := seedRevealable(s, "name", "card")
	out := s.must(200, "POST", "/v1/detokenize", agent, map[string]any{"tokens": []any{tokens["name"], tokens["card"]}, "purpose": "e2e"})
	if res := out["results"].([]any); res[0].(map[string]any)["value"] != secrets[0] || res[1].(map[string]any)["value"] != secrets[1] {
		t.Fatalf("detokenize: %v", out)
	}

	var mu sync.Mutex
	acked := map[string]bool{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 5 * time.Second}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				b, _ := json.Marshal(map[string]any{"records": []map[string]any{{"fields": map[string]any{"dept": fmt.Sprintf("w%d-%d", w, i), "name": secrets[0], "card": secrets[1]}}}})
				req, _ := http.NewRequest("POST", s.url+"/v1/collections/hr/records", bytes.NewReader(b))
				req.Header.Set("Authorization", "Bearer "+writer)
				resp, err := client.Do(req)
				if err != nil {
					return
				}
				var got map[string]any
				err = json.NewDecoder(resp.Body).Decode(&got)
				resp.Body.Close()
				if resp.StatusCode == 201 && err == nil {
					rid, _ := firstRecord(got)
					mu.Lock()
					acked[rid] = true
					mu.Unlock()
				}
			}
		}()
	}
	time.Sleep(1500 * time.Millisecond)
	s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.exited
	close(stop)
	wg.Wait()
	if len(acked) < 20 {
		t.Fatalf("only %d writes acknowledged before the kill", len(acked))
	}
	logs1 := s.logs()

	s = start(t, dir, env, args...)
	for rid := range acked {
		if status, _ := s.call("GET", "/v1/collections/hr/records/"+rid, writer, nil); status != 200 {
			t.Fatalf("acknowledged record %s lost after kill -9: %d", rid, status)
		}
	}
	got := s.must(200, "GET", "/v1/collections/hr/records/"+id, writer, nil)
	if got["fields"].(map[string]any)["name"] != tokens["name"] {
		t.Fatalf("the first record after restart: %v", got)
	}
	out = s.must(200, "POST", "/v1/detokenize", agent, map[string]any{"tokens": []any{tokens["card"]}, "purpose": "e2e"})
	if out["results"].([]any)[0].(map[string]any)["value"] != secrets[1] {
		t.Fatalf("detokenize after restart: %v", out)
	}
	ops := s.must(201, "POST", "/v1/principals", admin, map[string]any{"name": "ops", "roles": []string{"auditor"}})["token"].(string)
	if verified := s.must(200, "GET", "/v1/audit/verify", ops, nil); verified["ok"] != true {
		t.Fatalf("audit verify after kill -9: %v", verified)
	}
	t.Logf("%d acknowledged writes, all present after kill -9", len(acked))
	s.stop()
	assertNoSecrets(t, dir, logs1, s.logs())
	if data := os.Getenv("AGENTVAULT_POSTGRES_DATA"); data != "" {
		assertNoSecrets(t, data)
	}
	for _, l := range []string{logs1, s.logs()} {
		if strings.Contains(l, db) {
			t.Fatal("the PostgreSQL URL was logged")
		}
	}
}
