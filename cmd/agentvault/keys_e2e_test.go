package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentvault/agentvault/internal/vaulttest"
)

// cli runs an agentvault subcommand against a running server as the
// operator, returning stdout and stderr.
func (s *server) cli(token string, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, avBinary, args...)
	cmd.WaitDelay = 10 * time.Second
	cmd.Env = append(cmd.Environ(), "AGENTVAULT_URL="+s.url, "AGENTVAULT_TOKEN="+token)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// keyState reads GET /v1/keys: the KEK version, the KEK version of every
// wrapped keyset, and per data key of a collection its state and values.
func keyState(s *server, operator, coll string) (kek int, wrapped map[string]int, primary string, dataKeys map[string][2]any) {
	st := s.must(200, "GET", "/v1/keys", operator, nil)
	k := st["kek"].(map[string]any)
	kek = int(k["version"].(float64))
	wrapped = map[string]int{}
	for _, w := range k["wrapped"].([]any) {
		wm := w.(map[string]any)
		wrapped[wm["scope"].(string)] = int(wm["kek_version"].(float64))
	}
	dataKeys = map[string][2]any{}
	for _, c := range st["collections"].([]any) {
		cm := c.(map[string]any)
		if cm["collection"] != coll {
			continue
		}
		primary = fmt.Sprint(int64(cm["primary_key_id"].(float64)))
		for _, d := range cm["data_keys"].([]any) {
			dm := d.(map[string]any)
			dataKeys[fmt.Sprint(int64(dm["key_id"].(float64)))] = [2]any{dm["state"], dm["values"]}
		}
	}
	return
}

// TestKEKRotationWithRealVault rotates the KEK in the real Vault twice
// with the operator CLI, raises the Transit key's min_decryption_version
// past every old version, restarts, and reads every value. A rotation
// with Vault down answers 503 and changes nothing.
func TestKEKRotationWithRealVault(t *testing.T) {
	t.Parallel()
	v := vaulttest.Start(t)
	dir := t.TempDir()
	env := append([]string{"VAULT_ADDR=" + v.Addr, "VAULT_TOKEN=" + v.Token}, adminEnv...)
	args := []string{"--kms", "vault", "--vault-key", "av-rotate"}
	s := start(t, dir, env, args...)
	writer := setupCollection(s)
	agent, agentID := newAgent(s)
	operator := s.must(201, "POST", "/v1/principals", admin, map[string]any{"name": "ops", "roles": []string{"operator"}})["token"].(string)
	s.must(201, "POST", "/v1/grants", admin, map[string]any{"principal_id": agentID, "collection": "hr", "fields": []string{"name", "card", "note"}, "purpose": "e2e", "ttl": "1h", "reveal": "plain"})
	var tokens []any
	for i := range 20 {
		status, out := writeOne(s, writer, i)
		if status != 201 {
			t.Fatalf("write: %d %v", status, out)
		}
		_, f := firstRecord(out)
		tokens = append(tokens, f["name"], f["card"], f["note"])
	}
	readAll := func(s *server) {
		t.Helper()
		out := s.must(200, "POST", "/v1/detokenize", agent, map[string]any{"tokens": tokens, "purpose": "e2e"})
		for i, r := range out["results"].([]any) {
			if got := r.(map[string]any)["value"]; got != secrets[i%3] {
				t.Fatalf("token %d reads %v (%v), want %q", i, got, r.(map[string]any)["status"], secrets[i%3])
			}
		}
	}
	readAll(s) // creates the audit token-hash keyset too

	for want := 2; want <= 3; want++ {
		out, errOut, err := s.cli(operator, "keys", "rotate", "--target", "kek")
		if err != nil || !strings.Contains(out, fmt.Sprintf("rotated to version %d", want)) {
			t.Fatalf("keys rotate --target kek: %v\n%s%s", err, out, errOut)
		}
	}
	kek, wrapped, _, _ := keyState(s, operator, "hr")
	if kek != 3 || len(wrapped) < 3 {
		t.Fatalf("KEK version %d, wrapped %v", kek, wrapped)
	}
	for scope, ver := range wrapped {
		if ver != 3 {
			t.Errorf("%s is wrapped under KEK version %d after two rotations, want 3", scope, ver)
		}
	}
	status, _, err := s.cli(operator, "keys", "status")
	if err != nil || !strings.Contains(status, "version 3") || !strings.Contains(status, "0 under an older KEK version") {
		t.Fatalf("keys status: %v\n%s", err, status)
	}

	// Retire every old version in Vault: nothing may depend on them.
	vc := v.Client(t)
	if _, err := vc.Logical().Write("transit/keys/av-rotate/config", map[string]any{"min_decryption_version": 3}); err != nil {
		t.Fatal(err)
	}
	s.stop()
	s = start(t, dir, env, args...)
	readAll(s) // every keyset is unwrapped again, by version 3 only
	if status, out := writeOne(s, writer, 99); status != 201 {
		t.Fatalf("write after the restart: %d %v", status, out)
	}
	st := s.must(200, "GET", "/v1/keys", operator, nil)
	if k := st["kek"].(map[string]any); k["min_decryption_version"] != float64(3) {
		t.Fatalf("kek status: %v", k)
	}
	auditor := s.must(201, "POST", "/v1/principals", admin, map[string]any{"name": "aud", "roles": []string{"auditor"}})["token"].(string)
	if v := s.must(200, "GET", "/v1/audit/verify", auditor, nil); v["ok"] != true {
		t.Fatalf("audit chain: %v", v)
	}
	rewraps := s.must(200, "GET", "/v1/audit?action=key.rewrap&limit=100", auditor, nil)["entries"].([]any)
	if len(rewraps) < 2*len(wrapped)-1 {
		t.Fatalf("%d key.rewrap audit entries for %d keysets rotated twice", len(rewraps), len(wrapped))
	}

	// Vault down: readiness and rotation answer 503; nothing is half-done.
	v.Stop()
	if status, out := s.call("GET", "/readyz", "", nil); status != 503 {
		t.Fatalf("readyz with Vault down: %d %v", status, out)
	}
	for _, body := range []map[string]any{{"target": "kek"}, {"target": "dek", "collection": "hr"}} {
		status, out := s.call("POST", "/v1/keys/rotate", operator, body)
		if status != 503 || out["error"].(map[string]any)["code"] != "kms_unavailable" {
			t.Fatalf("rotate %v with Vault down: %d %v", body, status, out)
		}
	}
	if status, out := s.call("GET", "/v1/keys", operator, nil); status != 503 {
		t.Fatalf("key status with Vault down: %d %v", status, out)
	}
	readAll(s) // cached keys keep serving
	s.stop()
	assertNoSecrets(t, dir, s.logs())
}

// TestReencryptSurvivesKill9 rotates a collection's DEK and re-encrypts it
// while writers and an agent keep going, kills the server with SIGKILL in
// the middle of the job, restarts it, and checks the job resumes and
// finishes with nothing lost, no request failed, and the old key retired.
func TestReencryptSurvivesKill9(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	args := []string{"--reencrypt-batch", "25", "--reencrypt-pause", "10ms"}
	s := start(t, dir, adminEnv, args...)
	writer := setupCollection(s)
	agent, agentID := newAgent(s)
	operator := s.must(201, "POST", "/v1/principals", admin, map[string]any{"name": "ops", "roles": []string{"operator"}})["token"].(string)
	s.must(201, "POST", "/v1/grants", admin, map[string]any{"principal_id": agentID, "collection": "hr", "fields": []string{"name", "card", "note"}, "purpose": "e2e", "ttl": "1h", "reveal": "plain"})
	var batch []map[string]any
	for i := range 1000 {
		batch = append(batch, map[string]any{"fields": map[string]any{"dept": fmt.Sprint(i), "name": secrets[0], "card": secrets[1], "note": secrets[2]}})
	}
	out := s.must(201, "POST", "/v1/collections/hr/records", writer, map[string]any{"records": batch})
	var tokens []any
	for _, r := range out["records"].([]any) {
		f := r.(map[string]any)["fields"].(map[string]any)
		tokens = append(tokens, f["name"], f["card"])
	}
	_, _, oldKey, _ := keyState(s, operator, "hr")
	rot, errOut, err := s.cli(operator, "keys", "rotate", "--target", "dek", "--collection", "hr")
	if err != nil || !strings.Contains(rot, "new primary data key") {
		t.Fatalf("keys rotate --target dek: %v\n%s%s", err, rot, errOut)
	}

	// Live traffic through the whole job, across the kill: it must not see
	// a single failure except while the server is down.
	var failures atomic.Int32
	var down atomic.Bool
	stop := make(chan struct{})
	var wg sync.WaitGroup
	srv := atomic.Pointer[server]{}
	srv.Store(s)
	traffic := func(do func(*server) (int, string)) {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			cur := srv.Load()
			if down.Load() {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			if status, what := do(cur); status != 200 && status != 201 && !down.Load() {
				failures.Add(1)
				t.Errorf("request failed during re-encryption: %d %s", status, what)
				return
			}
		}
	}
	wg.Add(2)
	go traffic(func(cur *server) (int, string) {
		st, out := cur.callQuiet("POST", "/v1/collections/hr/records", writer, map[string]any{"records": []map[string]any{{"fields": map[string]any{"name": secrets[0], "card": secrets[1]}}}})
		return st, fmt.Sprint(out)
	})
	go traffic(func(cur *server) (int, string) {
		st, out := cur.callQuiet("POST", "/v1/detokenize", agent, map[string]any{"tokens": tokens[:10], "purpose": "e2e"})
		if st == 200 {
			for _, r := range out["results"].([]any) {
				if r.(map[string]any)["status"] != "ok" {
					return 500, fmt.Sprint(out)
				}
			}
		}
		return st, fmt.Sprint(out)
	})

	job := s.must(202, "POST", "/v1/keys/reencrypt", operator, map[string]any{"collection": "hr"})
	id := job["job_id"].(string)
	total := job["total"].(float64)
	if total < 2000 {
		t.Fatalf("job total %v, want at least 2000 values under the old key", total)
	}
	for {
		j := s.must(200, "GET", "/v1/jobs/"+id, operator, nil)
		if j["done"].(float64) >= 300 {
			if j["status"] != "running" {
				t.Fatalf("the job finished before the kill; make it slower: %v", j)
			}
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	down.Store(true)
	s.kill()
	s = start(t, dir, adminEnv, args...)
	srv.Store(s)
	down.Store(false)
	mid := s.must(200, "GET", "/v1/jobs/"+id, operator, nil)
	if mid["status"] != "running" || mid["done"].(float64) < 300 || mid["done"].(float64) >= total {
		t.Fatalf("after the kill the job should resume part-way: %v", mid)
	}
	var final map[string]any
	deadline := time.Now().Add(2 * time.Minute)
	for {
		final = s.must(200, "GET", "/v1/jobs/"+id, operator, nil)
		if final["status"] != "running" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("job did not finish: %v", final)
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if final["status"] != "done" || final["done"].(float64) != total || final["resumed"] != float64(1) {
		t.Fatalf("job after resuming: %v", final)
	}
	if failures.Load() > 0 {
		t.Fatalf("%d requests failed during re-encryption", failures.Load())
	}

	// Writes that raced the rotation may still use the old key: the CLI
	// runs one more pass, with its progress bar, and then the old key is
	// unused and can be retired.
	sum, bar, err := s.cli(operator, "keys", "reencrypt", "--collection", "hr")
	if err != nil || !strings.Contains(sum, " done: ") || !strings.Contains(bar, "100.0%") {
		t.Fatalf("keys reencrypt: %v\n%s\n%s", err, sum, bar)
	}
	_, _, primary, ks := keyState(s, operator, "hr")
	if primary == oldKey || ks[oldKey][1] != float64(0) {
		t.Fatalf("old key %s after re-encryption: %v (primary %s)", oldKey, ks, primary)
	}
	for _, step := range []string{"disable", "destroy"} {
		if out, errOut, err := s.cli(operator, "keys", step, "--collection", "hr", "--key-id", oldKey); err != nil {
			t.Fatalf("keys %s: %v\n%s%s", step, err, out, errOut)
		}
	}
	if _, _, _, ks := keyState(s, operator, "hr"); ks[oldKey][0] != "destroyed" {
		t.Fatalf("old key after destroy: %v", ks)
	}
	_, errOut, err = s.cli(operator, "keys", "destroy", "--collection", "hr", "--key-id", primary)
	if err == nil || !strings.Contains(errOut, "key_is_primary") {
		t.Fatalf("destroying the primary: %v %s", err, errOut)
	}
	// Every value, old and new, still reads.
	for i := 0; i < len(tokens); i += 1000 {
		out := s.must(200, "POST", "/v1/detokenize", agent, map[string]any{"tokens": tokens[i:min(i+1000, len(tokens))], "purpose": "e2e"})
		for j, r := range out["results"].([]any) {
			if got := r.(map[string]any)["value"]; got != secrets[(i+j)%2] {
				t.Fatalf("token %d reads %v after re-encryption", i+j, r)
			}
		}
	}
	s.stop()
	assertNoSecrets(t, dir, s.logs())
}

// callQuiet is call for background goroutines: a transport error is
// status 0, never a test failure by itself.
func (s *server) callQuiet(method, path, token string, body any) (int, map[string]any) {
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(method, s.url+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := testHTTP.Do(req)
	if err != nil {
		return 0, map[string]any{"transport": err.Error()}
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// TestScheduledRotation runs the server with rotation schedules: the KEK
// and the data keys rotate on their own, audited, and data stays readable.
func TestScheduledRotation(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := start(t, dir, adminEnv, "--rotate-kek-every", "300ms", "--rotate-dek-every", "400ms")
	writer := setupCollection(s)
	status, out := writeOne(s, writer, 0)
	if status != 201 {
		t.Fatalf("write: %d %v", status, out)
	}
	id, tokens := firstRecord(out)
	operator := s.must(201, "POST", "/v1/principals", admin, map[string]any{"name": "ops", "roles": []string{"operator"}})["token"].(string)
	deadline := time.Now().Add(30 * time.Second)
	for {
		kek, wrapped, _, ks := keyState(s, operator, "hr")
		behind := 0
		for _, v := range wrapped {
			if v != kek {
				behind++
			}
		}
		if kek >= 3 && len(ks) >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no scheduled rotations: KEK version %d, data keys %v, %d keysets behind", kek, ks, behind)
		}
		time.Sleep(50 * time.Millisecond)
	}
	auditor := s.must(201, "POST", "/v1/principals", admin, map[string]any{"name": "aud", "roles": []string{"auditor"}})["token"].(string)
	entries := s.must(200, "GET", "/v1/audit?action=key.rotate&limit=100", auditor, nil)["entries"].([]any)
	targets := map[string]bool{}
	for _, e := range entries {
		em := e.(map[string]any)
		if em["request_id"] != "scheduled-rotation" {
			t.Fatalf("scheduled rotation audited without its marker: %v", em)
		}
		targets[em["target"].(string)] = true
	}
	if !targets["kek"] || !targets["dek/hr"] {
		t.Fatalf("scheduled rotations audited: %v", targets)
	}
	s.stop()
	s = start(t, dir, adminEnv)
	got := s.must(200, "GET", "/v1/collections/hr/records/"+id, writer, nil)
	if got["fields"].(map[string]any)["name"] != tokens["name"] {
		t.Fatalf("record after scheduled rotations: %v", got)
	}
	agent, agentID := newAgent(s)
	s.must(201, "POST", "/v1/grants", admin, map[string]any{"principal_id": agentID, "collection": "hr", "fields": []string{"name"}, "purpose": "e2e", "ttl": "1h", "reveal": "plain"})
	res := s.must(200, "POST", "/v1/detokenize", agent, map[string]any{"tokens": []any{tokens["name"]}, "purpose": "e2e"})
	if res["results"].([]any)[0].(map[string]any)["value"] != secrets[0] {
		t.Fatalf("value after scheduled rotations: %v", res)
	}
}
