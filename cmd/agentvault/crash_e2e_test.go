package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// crashKills is how many times TestCrashRecovery kills the server: 20 in
// the README's test command, more with AGENTVAULT_CRASH_KILLS.
func crashKills(t *testing.T) int {
	if v := os.Getenv("AGENTVAULT_CRASH_KILLS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("AGENTVAULT_CRASH_KILLS=%q", v)
		}
		return n
	}
	return 20
}

// crashLoad is what the workload saw acknowledged across every kill.
type crashLoad struct {
	mu      sync.Mutex
	records map[string]any    // record id -> its name token, acknowledged
	reveals map[string]string // request id -> record id, acknowledged "ok"
}

// TestCrashRecovery runs the binary under concurrent creates, detokenizes
// (each a grant use) and a running re-encryption job, kills it with
// SIGKILL at random moments, restarts it, and after every restart and at
// the end checks: every acknowledged record reads back with its token
// and reveals its value, every acknowledged reveal has its audit entry,
// the grant's use count equals the reveals the audit log records (every
// acknowledged one among them), the audit chain verifies, and the
// re-encryption job resumes and finishes with no value left under the
// old key.
func TestCrashRecovery(t *testing.T) {
	t.Parallel()
	kills := crashKills(t)
	dir := t.TempDir()
	args := []string{"--reencrypt-batch", "16", "--reencrypt-pause", "20ms"}
	s := start(t, dir, adminEnv, args...)
	writer := setupCollection(s)
	agent, agentID := newAgent(s)
	ops := s.must(201, "POST", "/v1/principals", admin, map[string]any{"name": "ops", "roles": []string{"operator", "auditor"}})["token"].(string)
	grant := s.must(201, "POST", "/v1/grants", admin, map[string]any{"principal_id": agentID, "collection": "hr", "fields": []string{"name"}, "purpose": "crash", "ttl": "24h", "reveal": "plain"})
	load := &crashLoad{records: map[string]any{}, reveals: map[string]string{}}
	var batch []map[string]any
	for i := range 2000 {
		batch = append(batch, map[string]any{"fields": map[string]any{"dept": fmt.Sprint("seed-", i), "name": secrets[0]}})
	}
	for _, r := range s.must(201, "POST", "/v1/collections/hr/records", writer, map[string]any{"records": batch})["records"].([]any) {
		rec := r.(map[string]any)
		load.records[rec["id"].(string)] = rec["fields"].(map[string]any)["name"]
	}
	s.must(200, "POST", "/v1/keys/rotate", ops, map[string]any{"target": "dek", "collection": "hr"})
	jobID := s.must(202, "POST", "/v1/keys/reencrypt", ops, map[string]any{"collection": "hr"})["job_id"].(string)

	for k := 1; k <= kills; k++ {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Add(1)
			go func() { defer wg.Done(); crashWriter(s, writer, load, stop, fmt.Sprintf("k%d-w%d", k, w)) }()
		}
		for d := range 2 {
			wg.Add(1)
			go func() { defer wg.Done(); crashRevealer(s, agent, load, stop, fmt.Sprintf("crash-%d-%d", k, d)) }()
		}
		time.Sleep(time.Duration(150+rand.IntN(600)) * time.Millisecond)
		s.cmd.Process.Signal(syscall.SIGKILL)
		<-s.exited
		close(stop)
		wg.Wait()
		s = start(t, dir, adminEnv, args...)
		if v := s.must(200, "GET", "/v1/audit/verify", ops, nil); v["ok"] != true {
			t.Fatalf("after kill %d the audit chain does not verify: %v", k, v)
		}
	}

	// Every acknowledged record is there, with its token.
	load.mu.Lock()
	defer load.mu.Unlock()
	for id, tok := range load.records {
		status, got := s.call("GET", "/v1/collections/hr/records/"+id, writer, nil)
		if status != 200 || got["fields"].(map[string]any)["name"] != tok {
			t.Fatalf("acknowledged record %s after %d kills: %d %v", id, kills, status, got)
		}
	}
	// Every acknowledged reveal is audited; the grant spent exactly the
	// uses the log records.
	audited := map[string]bool{}
	uses := 0
	for after := "0"; after != ""; {
		page := s.must(200, "GET", "/v1/audit?action=detokenize&limit=1000&after="+after, ops, nil)
		for _, e := range page["entries"].([]any) {
			entry := e.(map[string]any)
			if entry["decision"] == "allowed" && entry["grant_id"] == grant["id"] {
				audited[entry["request_id"].(string)] = true
				uses++
			}
		}
		after = ""
		if n, ok := page["next"].(float64); ok {
			after = strconv.FormatUint(uint64(n), 10)
		}
	}
	for rid := range load.reveals {
		if !audited[rid] {
			t.Fatalf("acknowledged reveal %s has no audit entry", rid)
		}
	}
	var got float64
	for _, g := range s.must(200, "GET", "/v1/grants", admin, nil)["grants"].([]any) {
		if g.(map[string]any)["id"] == grant["id"] {
			got = g.(map[string]any)["uses"].(float64)
		}
	}
	if int(got) != uses || uses < len(load.reveals) {
		t.Fatalf("grant uses %v, audited reveals %d, acknowledged %d", got, uses, len(load.reveals))
	}
	// The re-encryption job resumed after every kill and finishes.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		j := s.must(200, "GET", "/v1/jobs/"+jobID, ops, nil)
		if j["status"] == "done" {
			break
		}
		if j["status"] == "failed" || time.Now().After(deadline) {
			t.Fatalf("re-encryption job after %d kills: %v", kills, j)
		}
		time.Sleep(100 * time.Millisecond)
	}
	keys := s.must(200, "GET", "/v1/keys", ops, nil)
	for _, c := range keys["collections"].([]any) {
		coll := c.(map[string]any)
		for _, dk := range coll["data_keys"].([]any) {
			k := dk.(map[string]any)
			if k["primary"] != true && k["values"].(float64) != 0 {
				t.Fatalf("after the job, an old key still protects values: %v", k)
			}
		}
	}
	// A sample of acknowledged records still reveals its value.
	n := 0
	for _, tok := range load.records {
		if n++; n > 50 {
			break
		}
		out := s.must(200, "POST", "/v1/detokenize", agent, map[string]any{"tokens": []any{tok}, "purpose": "crash"})
		if r := out["results"].([]any)[0].(map[string]any); r["value"] != secrets[0] {
			t.Fatalf("reveal after %d kills: %v", kills, r)
		}
	}
	t.Logf("%d kills: %d acknowledged records, %d acknowledged reveals (%d audited uses), chain verified after each restart, re-encryption finished",
		kills, len(load.records), len(load.reveals), uses)
	s.stop()
}

// crashWriter stores records until stop, noting the acknowledged ones.
func crashWriter(s *server, writer string, load *crashLoad, stop chan struct{}, tag string) {
	client := &http.Client{Timeout: 5 * time.Second}
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		b, _ := json.Marshal(map[string]any{"records": []map[string]any{{"fields": map[string]any{"dept": fmt.Sprint(tag, "-", i), "name": secrets[0]}}}})
		req, _ := http.NewRequest("POST", s.url+"/v1/collections/hr/records", bytes.NewReader(b))
		req.Header.Set("Authorization", "Bearer "+writer)
		resp, err := client.Do(req)
		if err != nil {
			return // killed
		}
		var out map[string]any
		err = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if resp.StatusCode == 201 && err == nil {
			id, f := firstRecord(out)
			load.mu.Lock()
			load.records[id] = f["name"]
			load.mu.Unlock()
		}
	}
}

// crashRevealer detokenizes acknowledged records until stop, each request
// with its own request id, noting the acknowledged reveals.
func crashRevealer(s *server, agent string, load *crashLoad, stop chan struct{}, tag string) {
	client := &http.Client{Timeout: 5 * time.Second}
	load.mu.Lock()
	var ids []string
	for id := range load.records {
		if ids = append(ids, id); len(ids) == 200 {
			break
		}
	}
	load.mu.Unlock()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		id := ids[i%len(ids)]
		load.mu.Lock()
		tok := load.records[id]
		load.mu.Unlock()
		rid := fmt.Sprint(tag, "-", i)
		b, _ := json.Marshal(map[string]any{"tokens": []any{tok}, "purpose": "crash"})
		req, _ := http.NewRequest("POST", s.url+"/v1/detokenize", bytes.NewReader(b))
		req.Header.Set("Authorization", "Bearer "+agent)
		req.Header.Set("X-Request-Id", rid)
		resp, err := client.Do(req)
		if err != nil {
			return
		}
		var out map[string]any
		err = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if resp.StatusCode == 200 && err == nil {
			if r := out["results"].([]any)[0].(map[string]any); r["status"] == "ok" && r["value"] == secrets[0] {
				load.mu.Lock()
				load.reveals[rid] = id
				load.mu.Unlock()
			}
		}
	}
}
