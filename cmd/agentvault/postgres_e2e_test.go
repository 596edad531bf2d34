package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
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

	acked := killUnderWrites(s, writer, 8, 1500*time.Millisecond)
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

// TestTwoNodesOneVault: two serve processes on one PostgreSQL database
// behave as one vault. What one node creates (principals, grants) the
// other honours within its poll; of 50 reveals racing for a grant's last
// use across both nodes exactly one wins; a grant revoked on one node is
// refused by the other at once; a principal revoked on one node cannot
// reveal on the other; writes on both nodes make one audit chain that
// verifies whole.
func TestTwoNodesOneVault(t *testing.T) {
	t.Parallel()
	v := vaulttest.Start(t)
	db := pgtest.Database(t)
	env := append([]string{"VAULT_ADDR=" + v.Addr, "VAULT_TOKEN=" + v.Token, "AGENTVAULT_POSTGRES_URL=" + db}, adminEnv...)
	args := []string{"--store", "postgres", "--kms", "vault", "--vault-key", "av-two"}
	a := start(t, t.TempDir(), env, args...)
	b := start(t, t.TempDir(), env, args...)
	writer, recID, tokens, agent := seedRevealable(a, "name", "card")

	// Node b learns of the agent and its grant by itself.
	reveal := func(s *server, token string, toks ...any) (int, map[string]any) {
		return s.call("POST", "/v1/detokenize", token, map[string]any{"tokens": toks, "purpose": "e2e"})
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		status, out := reveal(b, agent, tokens["card"])
		if status == 200 && out["results"].([]any)[0].(map[string]any)["value"] == secrets[1] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node b never honoured node a's agent and grant: %d %v", status, out)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The last use of a grant, raced from both nodes.
	racer, racerID := newAgent(a)
	g := a.must(201, "POST", "/v1/grants", admin, map[string]any{"principal_id": racerID, "collection": "hr", "fields": []string{"name"}, "purpose": "e2e", "ttl": "1h", "reveal": "plain", "max_uses": 1})
	time.Sleep(1500 * time.Millisecond) // past b's poll
	var mu sync.Mutex
	wins, refusals := 0, 0
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := []*server{a, b}[i%2]
			status, out := reveal(s, racer, tokens["name"])
			mu.Lock()
			defer mu.Unlock()
			if status == 200 && out["results"].([]any)[0].(map[string]any)["status"] == "ok" {
				wins++
			} else {
				refusals++
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d reveals won the grant's single use across two nodes (%d refused), want exactly 1", wins, refusals)
	}

	// Revoked on a, refused on b at once.
	gid, _ := firstAgentGrant(t, a, agent)
	if status, out := a.call("DELETE", "/v1/grants/"+gid, admin, nil); status != 204 {
		t.Fatalf("revoke grant: %d %v", status, out)
	}
	if status, out := reveal(b, agent, tokens["card"]); status == 200 && out["results"].([]any)[0].(map[string]any)["status"] == "ok" {
		t.Fatalf("node b revealed under a grant node a revoked: %v", out)
	}
	// Reads too: the revoked grant no longer shows the agent the record.
	if status, out := b.call("GET", "/v1/collections/hr/records/"+recID+"?purpose=e2e", agent, nil); status == 200 {
		t.Fatalf("node b served a read under a grant node a revoked: %v", out)
	}
	if g["max_uses"] != float64(1) {
		t.Fatalf("grant: %v", g)
	}

	// A principal revoked on a cannot reveal on b.
	if status, out := a.call("DELETE", "/v1/principals/"+racerID, admin, nil); status != 204 {
		t.Fatalf("revoke principal: %d %v", status, out)
	}
	if status, out := reveal(b, racer, tokens["name"]); status == 200 {
		t.Fatalf("node b served a principal node a revoked: %v", out)
	}

	// Writes on both nodes, one chain.
	stop := make(chan struct{})
	var wwg sync.WaitGroup
	var acked sync.Map
	for w := range 8 {
		wwg.Add(1)
		go func() {
			defer wwg.Done()
			s := []*server{a, b}[w%2]
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if status, out := writeOne(s, writer, 1000*w+i); status == 201 {
					id, _ := firstRecord(out)
					acked.Store(id, true)
				}
			}
		}()
	}
	time.Sleep(2 * time.Second)
	close(stop)
	wwg.Wait()
	ops := a.must(201, "POST", "/v1/principals", admin, map[string]any{"name": "ops", "roles": []string{"auditor"}})["token"].(string)
	time.Sleep(1500 * time.Millisecond)
	for _, s := range []*server{a, b} {
		if verified := s.must(200, "GET", "/v1/audit/verify", ops, nil); verified["ok"] != true {
			t.Fatalf("audit verify on %s after writes on both nodes: %v", s.url, verified)
		}
	}
	n := 0
	acked.Range(func(id, _ any) bool {
		n++
		for _, s := range []*server{a, b} {
			if status, _ := s.call("GET", "/v1/collections/hr/records/"+id.(string), writer, nil); status != 200 {
				t.Fatalf("record %s written on one node is not readable on %s: %d", id, s.url, status)
			}
		}
		return true
	})
	t.Logf("%d writes on two nodes, one chain; %d of 50 racing reveals refused", n, refusals)

	// A value held in a detect field, written on one node, is found in
	// text on the other within its poll.
	a.must(201, "POST", "/v1/collections", admin, map[string]any{"name": "clients", "fields": []map[string]any{
		{"name": "name", "type": "string", "sensitive": true, "token": "deterministic", "detect": true},
	}})
	a.must(201, "POST", "/v1/collections/clients/records", writer, map[string]any{"records": []map[string]any{{"fields": map[string]any{"name": "Omar Haddad"}}}})
	deadline = time.Now().Add(15 * time.Second)
	for {
		red := b.must(200, "POST", "/v1/redact", writer, map[string]any{"text": "Call OMAR HADDAD today.", "mode": "mask"})
		if red["text"] == "Call [CLIENTS_NAME] today." {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node b never found the value written on node a: %v", red)
		}
		time.Sleep(200 * time.Millisecond)
	}
	a.stop()
	b.stop()
}

// firstAgentGrant returns the id of the first grant of the agent whose
// token is given, and the agent's id.
func firstAgentGrant(t *testing.T, s *server, agentToken string) (grantID, agentID string) {
	t.Helper()
	me := s.must(200, "GET", "/v1/me", agentToken, nil)
	agentID, _ = me["id"].(string)
	list := s.must(200, "GET", "/v1/grants?principal_id="+agentID, admin, nil)
	gs, _ := list["grants"].([]any)
	if len(gs) == 0 {
		t.Fatalf("no grant for agent %s: %v", agentID, list)
	}
	return gs[0].(map[string]any)["id"].(string), agentID
}

// TestMigrateBadgerToPostgres: a Badger vault, stopped, copied into
// PostgreSQL with agentvault migrate, serves the same records, principals,
// grants and reveals from PostgreSQL, its audit chain whole with the
// migration recorded; a second migration into the same database is
// refused.
func TestMigrateBadgerToPostgres(t *testing.T) {
	t.Parallel()
	v := vaulttest.Start(t)
	db := pgtest.Database(t)
	dir := t.TempDir()
	vaultEnv := append([]string{"VAULT_ADDR=" + v.Addr, "VAULT_TOKEN=" + v.Token}, adminEnv...)
	s := start(t, dir, vaultEnv, "--kms", "vault", "--vault-key", "av-migrate")
	writer, id, tokens, agent := seedRevealable(s, "name", "card")
	for i := range 20 {
		if status, out := writeOne(s, writer, i+1); status != 201 {
			t.Fatalf("write: %d %v", status, out)
		}
	}
	s.stop()

	migrate := func() (string, error) {
		cmd := command(2*time.Minute, avBinary, "migrate", "--from-data-dir", dir, "--to-postgres", db)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := migrate()
	if err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	var res struct {
		Keys  int
		Audit struct{ OK bool }
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || !res.Audit.OK || res.Keys == 0 {
		t.Fatalf("migrate answered %s", out)
	}
	if strings.Contains(out, "postgres@") {
		t.Fatalf("the migration's report names the database user: %s", out)
	}

	p := start(t, t.TempDir(), append(vaultEnv, "AGENTVAULT_POSTGRES_URL="+db), "--store", "postgres", "--kms", "vault", "--vault-key", "av-migrate")
	got := p.must(200, "GET", "/v1/collections/hr/records/"+id, writer, nil)
	if got["fields"].(map[string]any)["card"] != tokens["card"] {
		t.Fatalf("record after migration: %v", got)
	}
	rev := p.must(200, "POST", "/v1/detokenize", agent, map[string]any{"tokens": []any{tokens["name"], tokens["card"]}, "purpose": "e2e"})
	if res := rev["results"].([]any); res[0].(map[string]any)["value"] != secrets[0] || res[1].(map[string]any)["value"] != secrets[1] {
		t.Fatalf("detokenize after migration: %v", rev)
	}
	ops := p.must(201, "POST", "/v1/principals", admin, map[string]any{"name": "ops", "roles": []string{"auditor"}})["token"].(string)
	if verified := p.must(200, "GET", "/v1/audit/verify", ops, nil); verified["ok"] != true {
		t.Fatalf("audit verify after migration: %v", verified)
	}
	entries := p.must(200, "GET", "/v1/audit?action=store.migrate", ops, nil)
	if list, _ := entries["entries"].([]any); len(list) != 1 {
		t.Fatalf("store.migrate entries: %v", entries)
	}
	p.stop()
	if out, err := migrate(); err == nil || !strings.Contains(out, "not empty") {
		t.Fatalf("a second migration into the same database: %v %s", err, out)
	}
}

// TestBackupRestoreOnPostgres: an online backup of a vault on PostgreSQL,
// restored into a second, empty database with restore --to-postgres,
// serves the same records and reveals, its audit chain whole.
func TestBackupRestoreOnPostgres(t *testing.T) {
	t.Parallel()
	v := vaulttest.Start(t)
	db, db2 := pgtest.Database(t), pgtest.Database(t)
	env := append([]string{"VAULT_ADDR=" + v.Addr, "VAULT_TOKEN=" + v.Token}, adminEnv...)
	args := []string{"--store", "postgres", "--kms", "vault", "--vault-key", "av-pgbackup"}
	s := start(t, t.TempDir(), append(env, "AGENTVAULT_POSTGRES_URL="+db), args...)
	writer, id, tokens, agent := seedRevealable(s, "name", "card")
	operator := s.must(201, "POST", "/v1/principals", admin, map[string]any{"name": "ops", "roles": []string{"operator", "auditor"}})["token"].(string)
	file := filepath.Join(t.TempDir(), "vault.backup")
	cmd := command(2*time.Minute, avBinary, "backup", "--out", file)
	cmd.Env = append(os.Environ(), "AGENTVAULT_URL="+s.url, "AGENTVAULT_TOKEN="+operator)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("backup: %v\n%s", err, out)
	}
	s.stop()
	cmd = command(2*time.Minute, avBinary, "restore", "--to-postgres", db2, "--kms", "vault", "--vault-key", "av-pgbackup", file)
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "the audit chain verifies") {
		t.Fatalf("restore --to-postgres: %v\n%s", err, out)
	}
	r := start(t, t.TempDir(), append(env, "AGENTVAULT_POSTGRES_URL="+db2), args...)
	if got := r.must(200, "GET", "/v1/collections/hr/records/"+id, writer, nil); got["fields"].(map[string]any)["name"] != tokens["name"] {
		t.Fatalf("record after restore: %v", got)
	}
	rev := r.must(200, "POST", "/v1/detokenize", agent, map[string]any{"tokens": []any{tokens["card"]}, "purpose": "e2e"})
	if rev["results"].([]any)[0].(map[string]any)["value"] != secrets[1] {
		t.Fatalf("detokenize after restore: %v", rev)
	}
	if verified := r.must(200, "GET", "/v1/audit/verify", operator, nil); verified["ok"] != true {
		t.Fatalf("audit verify after restore: %v", verified)
	}
	r.stop()
}

// TestPostgresOutage: PostgreSQL stopped under write load on two nodes (a
// cluster of the test's own, from scripts/pg.sh). While it is down the
// nodes answer 503 and /readyz says so; when it is back they recover by
// themselves, with no restart, and every write they acknowledged, before,
// during or after, is there, with one audit chain.
func TestPostgresOutage(t *testing.T) {
	t.Parallel()
	if os.Getenv("AGENTVAULT_POSTGRES_URL") == "" {
		pgtest.Database(t) // says why, and fails where PostgreSQL is required
	}
	pgsh, err := filepath.Abs("../../scripts/pg.sh")
	if err != nil {
		t.Fatal(err)
	}
	cluster := filepath.Join(os.TempDir(), fmt.Sprintf("agentvault-pg-outage-%d", time.Now().UnixNano()))
	pg := func(args ...string) string {
		out, err := command(5*time.Minute, pgsh, append(args, cluster)...).Output()
		if err != nil {
			t.Fatalf("scripts/pg.sh %v: %v", args, err)
		}
		return strings.TrimSpace(string(out))
	}
	url := pg("start")
	t.Cleanup(func() { command(2*time.Minute, pgsh, "stop", cluster).Run() })
	dir := t.TempDir() // the development KEK, shared by both nodes
	s := start(t, dir, append([]string{"AGENTVAULT_POSTGRES_URL=" + url}, adminEnv...), "--store", "postgres")
	s2 := start(t, dir, append([]string{"AGENTVAULT_POSTGRES_URL=" + url}, adminEnv...), "--store", "postgres")
	writer := setupCollection(s)
	time.Sleep(1500 * time.Millisecond) // the second node learns the writer

	var mu sync.Mutex
	acked := map[string]bool{}
	refused := 0
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				status, out := writeOne([]*server{s, s2}[w%2], writer, 1000*w+i)
				mu.Lock()
				if status == 201 {
					id, _ := firstRecord(out)
					acked[id] = true
				} else {
					refused++
				}
				mu.Unlock()
				if status != 201 {
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	time.Sleep(time.Second)
	pg("pause")
	time.Sleep(500 * time.Millisecond)
	for _, n := range []*server{s, s2} {
		if status, out := n.call("GET", "/readyz", "", nil); status != 503 {
			t.Errorf("readyz with PostgreSQL down = %d %v, want 503", status, out)
		}
	}
	if status, out := writeOne(s, writer, 99999); status != 503 {
		t.Errorf("a write with PostgreSQL down = %d %v, want 503", status, out)
	}
	time.Sleep(time.Second)
	pg("resume")
	deadline := time.Now().Add(15 * time.Second)
	for _, n := range []*server{s, s2} {
		for {
			if status, _ := n.call("GET", "/readyz", "", nil); status == 200 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("a node did not recover after PostgreSQL came back:\n%s", n.logs())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	time.Sleep(time.Second) // writes go on after the outage
	close(stop)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	before := len(acked)
	for i, n := range []*server{s, s2} {
		if status, out := writeOne(n, writer, 100000+i); status != 201 {
			t.Fatalf("a write after the outage = %d %v", status, out)
		}
	}
	s.stop()
	s2.stop()
	s = start(t, dir, append([]string{"AGENTVAULT_POSTGRES_URL=" + url}, adminEnv...), "--store", "postgres")
	for id := range acked {
		if status, _ := s.call("GET", "/v1/collections/hr/records/"+id, writer, nil); status != 200 {
			t.Fatalf("acknowledged record %s lost across the outage: %d", id, status)
		}
	}
	ops := s.must(201, "POST", "/v1/principals", admin, map[string]any{"name": "ops", "roles": []string{"auditor"}})["token"].(string)
	if verified := s.must(200, "GET", "/v1/audit/verify", ops, nil); verified["ok"] != true {
		t.Fatalf("audit verify after the outage: %v", verified)
	}
	t.Logf("%d writes acknowledged around the outage, all present; %d refused while PostgreSQL was down", before, refused)
	s.stop()

	// A node started while the database is down waits for it (it does
	// not exit), and serves once it is back.
	pg("pause")
	go func() {
		time.Sleep(3 * time.Second)
		command(2*time.Minute, pgsh, "resume", cluster).Run()
	}()
	s = start(t, dir, append([]string{"AGENTVAULT_POSTGRES_URL=" + url}, adminEnv...), "--store", "postgres")
	if !strings.Contains(s.logs(), "database unreachable at start; retrying") {
		t.Fatalf("the node did not wait for the database:\n%s", s.logs())
	}
	if status, _ := s.call("GET", "/v1/collections/hr/records/"+firstKey(acked), writer, nil); status != 200 {
		t.Fatalf("a node started during the outage does not serve after it: %d", status)
	}
	s.stop()
}

func firstKey[V any](m map[string]V) string {
	for k := range m {
		return k
	}
	return ""
}

// TestJobTakeoverAcrossNodes: a re-encryption job runs on one node only
// (the other refuses a second one for the collection); its node is killed
// with SIGKILL part-way, and the other node takes the job over when the
// lease lapses and finishes it, every value re-encrypted once. A data key
// rotated on one node is the one the other writes under.
func TestJobTakeoverAcrossNodes(t *testing.T) {
	t.Parallel()
	v := vaulttest.Start(t)
	db := pgtest.Database(t)
	env := append([]string{"VAULT_ADDR=" + v.Addr, "VAULT_TOKEN=" + v.Token, "AGENTVAULT_POSTGRES_URL=" + db}, adminEnv...)
	args := []string{"--store", "postgres", "--kms", "vault", "--vault-key", "av-jobs", "--job-lease", "3s", "--reencrypt-batch", "25", "--reencrypt-pause", "20ms"}
	a := start(t, t.TempDir(), env, args...)
	b := start(t, t.TempDir(), env, args...)
	writer := setupCollection(a)
	operator := a.must(201, "POST", "/v1/principals", admin, map[string]any{"name": "ops", "roles": []string{"operator"}})["token"].(string)
	var batch []map[string]any
	for i := range 1000 {
		batch = append(batch, map[string]any{"fields": map[string]any{"dept": fmt.Sprint(i), "name": secrets[0], "card": secrets[1]}})
	}
	a.must(201, "POST", "/v1/collections/hr/records", writer, map[string]any{"records": batch})
	time.Sleep(1500 * time.Millisecond) // b learns the principals
	rot := a.must(200, "POST", "/v1/keys/rotate", operator, map[string]any{"target": "dek", "collection": "hr"})
	newKey := rot["key_id"]

	// Node b writes under the key node a made primary, at once.
	if status, out := writeOne(b, writer, 5000); status != 201 {
		t.Fatalf("write on b after the rotation on a: %d %v", status, out)
	}
	keyOf := func(s *server) map[float64]float64 {
		out := s.must(200, "GET", "/v1/keys", operator, nil)
		counts := map[float64]float64{}
		for _, c := range out["collections"].([]any) {
			cm := c.(map[string]any)
			if cm["collection"] != "hr" {
				continue
			}
			for _, k := range cm["data_keys"].([]any) {
				km := k.(map[string]any)
				counts[km["key_id"].(float64)] = km["values"].(float64)
			}
		}
		return counts
	}
	if n := keyOf(b)[newKey.(float64)]; n != 3 {
		t.Fatalf("values under the new key %v after one write on b: %v (want the record's 3)", newKey, keyOf(b))
	}

	job := a.must(202, "POST", "/v1/keys/reencrypt", operator, map[string]any{"collection": "hr"})
	id := job["job_id"].(string)
	if status, out := b.call("POST", "/v1/keys/reencrypt", operator, map[string]any{"collection": "hr"}); status != 409 {
		t.Fatalf("a second job for the collection on the other node: %d %v", status, out)
	}
	for {
		j := a.must(200, "GET", "/v1/jobs/"+id, operator, nil)
		if j["done"].(float64) >= 200 {
			if j["status"] != "running" {
				t.Fatalf("the job finished before the kill: %v", j)
			}
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	a.kill()
	var final map[string]any
	deadline := time.Now().Add(90 * time.Second)
	for {
		final = b.must(200, "GET", "/v1/jobs/"+id, operator, nil)
		if final["status"] != "running" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node b did not finish the job: %v\n%s", final, b.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if final["status"] != "done" || final["done"] != final["total"] || final["resumed"].(float64) < 1 {
		t.Fatalf("the job after the takeover: %v", final)
	}
	counts := keyOf(b)
	for k, n := range counts {
		if k != newKey.(float64) && n != 0 {
			t.Fatalf("values still under key %v after the job: %v", k, counts)
		}
	}
	t.Logf("job %s: %v values, taken over after node a's kill (resumed %v)", id, final["done"], final["resumed"])
	b.stop()
}

// TestApprovalsAcrossNodes: an approval requested on one node is decided
// on the other; its requester may not decide it there either (four-eyes);
// redeemed by 20 requests racing on both nodes, it reveals exactly once.
func TestApprovalsAcrossNodes(t *testing.T) {
	t.Parallel()
	v := vaulttest.Start(t)
	db := pgtest.Database(t)
	env := append([]string{"VAULT_ADDR=" + v.Addr, "VAULT_TOKEN=" + v.Token, "AGENTVAULT_POSTGRES_URL=" + db}, adminEnv...)
	args := []string{"--store", "postgres", "--kms", "vault", "--vault-key", "av-approvals"}
	a := start(t, t.TempDir(), env, args...)
	b := start(t, t.TempDir(), env, args...)
	a.must(201, "POST", "/v1/collections", admin, map[string]any{"name": "hr", "fields": []map[string]any{
		{"name": "ssn", "type": "string", "sensitive": true, "approval": "always"},
	}})
	writer := a.must(201, "POST", "/v1/principals", admin, map[string]any{"name": "app", "roles": []string{"writer"}})["token"].(string)
	approver := a.must(201, "POST", "/v1/principals", admin, map[string]any{"name": "carol", "roles": []string{"approver"}})["token"].(string)
	both := a.must(201, "POST", "/v1/principals", admin, map[string]any{"name": "dave", "roles": []string{"agent", "approver"}})
	self, selfID := both["token"].(string), both["id"].(string)
	agent, agentID := newAgent(a)
	_, fields := firstRecord(a.must(201, "POST", "/v1/collections/hr/records", writer, map[string]any{"records": []map[string]any{{"fields": map[string]any{"ssn": "123-45-6789"}}}}))
	for _, id := range []string{agentID, selfID} {
		a.must(201, "POST", "/v1/grants", admin, map[string]any{"principal_id": id, "collection": "hr", "fields": []string{"ssn"}, "purpose": "payroll", "ttl": "1h", "reveal": "plain"})
	}
	time.Sleep(1500 * time.Millisecond) // b's poll

	ask := func(s *server, token string, extra map[string]any) map[string]any {
		body := map[string]any{"tokens": []any{fields["ssn"]}, "purpose": "payroll"}
		for k, v := range extra {
			body[k] = v
		}
		return s.must(200, "POST", "/v1/detokenize", token, body)["results"].([]any)[0].(map[string]any)
	}
	// Four-eyes across nodes: asked on a, self-approval refused on b.
	mine := ask(a, self, nil)
	if mine["status"] != "pending_approval" {
		t.Fatalf("self request: %v", mine)
	}
	if status, out := b.call("POST", "/v1/approvals/"+mine["approval_id"].(string)+"/approve", self, map[string]any{"reason": "mine"}); status != 403 {
		t.Fatalf("the requester approved its own request on the other node: %d %v", status, out)
	}

	res := ask(a, agent, nil)
	id := res["approval_id"].(string)
	b.must(200, "POST", "/v1/approvals/"+id+"/approve", approver, map[string]any{"reason": "case 7"})
	var mu sync.Mutex
	revealed := 0
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := []*server{a, b}[i%2]
			status, out := s.call("POST", "/v1/detokenize", agent, map[string]any{"tokens": []any{fields["ssn"]}, "purpose": "payroll", "approval_id": id})
			if status == 200 && out["results"].([]any)[0].(map[string]any)["status"] == "ok" {
				mu.Lock()
				revealed++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if revealed != 1 {
		t.Fatalf("the approval revealed %d times across two nodes, want once", revealed)
	}
	a.stop()
	b.stop()
}
