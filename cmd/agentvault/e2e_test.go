package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/agentvault/agentvault/internal/vaulttest"
	"github.com/agentvault/agentvault/vault/auditlog"
)

// avBinary is the agentvault binary under test, built once by TestMain.
var avBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "agentvault-e2e")
	if err != nil {
		panic(err)
	}
	flag.Parse()
	startWatchdog()
	avBinary = filepath.Join(dir, "agentvault")
	build := exec.Command("go", "build", "-race", "-o", avBinary, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build agentvault:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// server is a running agentvault process.
type server struct {
	t      *testing.T
	cmd    *exec.Cmd
	url    string
	http   *http.Client // testHTTP unless a test sets one (TLS)
	mu     sync.Mutex
	stderr bytes.Buffer
	exited chan struct{}
	err    error
}

var listening = regexp.MustCompile(`"msg":"listening","addr":"([^"]+)","tls":(true|false)`)

func start(t *testing.T, dataDir string, env []string, args ...string) *server {
	t.Helper()
	args = append([]string{"serve", "--listen", "127.0.0.1:0", "--data-dir", dataDir, "--log-format", "json", "--log-level", "debug"}, args...)
	cmd := exec.Command(avBinary, args...)
	cmd.Env = append(os.Environ(), env...)
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &server{t: t, cmd: cmd, exited: make(chan struct{}), http: testHTTP}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			line := sc.Text()
			s.mu.Lock()
			s.stderr.WriteString(line + "\n")
			s.mu.Unlock()
			if m := listening.FindStringSubmatch(line); m != nil {
				scheme := "http://"
				if m[2] == "true" {
					scheme = "https://"
				}
				addr <- scheme + m[1]
			}
		}
		s.err = cmd.Wait()
		live.Delete(s)
		close(s.exited)
	}()
	live.Store(s, struct{}{})
	t.Cleanup(func() { s.kill() })
	select {
	case a := <-addr:
		s.url = a
	case <-s.exited:
		t.Fatalf("agentvault exited at start: %v\n%s", s.err, s.logs())
	case <-time.After(30 * time.Second):
		t.Fatalf("agentvault did not start:\n%s", s.logs())
	}
	return s
}

func (s *server) logs() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stderr.String()
}

func (s *server) kill() {
	select {
	case <-s.exited:
	default:
		s.cmd.Process.Kill()
		<-s.exited
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (s *server) stop() {
	s.t.Helper()
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		s.t.Fatal("agentvault did not stop on SIGTERM")
	}
	if s.err != nil {
		s.t.Fatalf("agentvault exited with %v:\n%s", s.err, s.logs())
	}
}

func (s *server) call(method, path, token string, body any) (int, map[string]any) {
	s.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, s.url+path, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := s.http.Do(req)
	if err != nil {
		s.failRequest(method, path, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// raw answers a GET with its body as bytes.
func (s *server) raw(method, path, token string) (int, []byte) {
	s.t.Helper()
	req, _ := http.NewRequest(method, s.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := s.http.Do(req)
	if err != nil {
		s.failRequest(method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// failRequest fails the test on a request that got no answer; if it
// timed out, with the server's stuck goroutines.
func (s *server) failRequest(method, path string, err error) {
	s.t.Helper()
	var ne interface{ Timeout() bool }
	if errors.As(err, &ne) && ne.Timeout() {
		s.t.Fatalf("%s %s: %v; the server's stuck goroutines:\n%s", method, path, err, s.stuck())
	}
	s.t.Fatalf("%s %s: %v", method, path, err)
}

func (s *server) must(want int, method, path, token string, body any) map[string]any {
	s.t.Helper()
	status, out := s.call(method, path, token, body)
	if status != want {
		s.t.Fatalf("%s %s = %d, want %d: %v", method, path, status, want, out)
	}
	return out
}

const admin = "e2e-admin-token-0123456789"

var adminEnv = []string{"AGENTVAULT_ADMIN_TOKEN=" + admin}

var secrets = []string{"Zelda Q. Secretname", "4929381722658812", "SALARY-MARKER-9931"}

func setupCollection(s *server) (writer string) {
	s.t.Helper()
	s.must(201, "POST", "/v1/collections", admin, map[string]any{"name": "hr", "fields": []map[string]any{
		{"name": "dept", "type": "string"},
		{"name": "name", "type": "string", "sensitive": true},
		{"name": "card", "type": "string", "sensitive": true, "token": "format_preserving", "format": "card"},
		{"name": "note", "type": "string", "sensitive": true, "token": "deterministic"},
	}})
	p := s.must(201, "POST", "/v1/principals", admin, map[string]any{"name": "hr-app", "roles": []string{"writer"}})
	return p["token"].(string)
}

func writeOne(s *server, writer string, i int) (int, map[string]any) {
	return s.call("POST", "/v1/collections/hr/records", writer, map[string]any{"records": []map[string]any{{"fields": map[string]any{
		"dept": fmt.Sprintf("dept-%d", i), "name": secrets[0], "card": secrets[1], "note": secrets[2],
	}}}})
}

func newAgent(s *server) (token, id string) {
	p := s.must(201, "POST", "/v1/principals", admin, map[string]any{"name": "agent", "roles": []string{"agent"}})
	return p["token"].(string), p["id"].(string)
}

// seedRevealable sets up the hr collection, stores one record, and grants
// a new agent plain reveals of fields (purpose "e2e").
func seedRevealable(s *server, fields ...string) (writer, id string, tokens map[string]any, agent string) {
	s.t.Helper()
	writer = setupCollection(s)
	status, out := writeOne(s, writer, 0)
	if status != 201 {
		s.t.Fatalf("write: %d %v", status, out)
	}
	id, tokens = firstRecord(out)
	agent, agentID := newAgent(s)
	s.must(201, "POST", "/v1/grants", admin, map[string]any{"principal_id": agentID, "collection": "hr", "fields": fields, "purpose": "e2e", "ttl": "1h", "reveal": "plain"})
	return writer, id, tokens, agent
}

func firstRecord(out map[string]any) (string, map[string]any) {
	r := out["records"].([]any)[0].(map[string]any)
	return r["id"].(string), r["fields"].(map[string]any)
}

// assertNoSecrets checks the data directory and the server's logs for the
// plaintext values.
func assertNoSecrets(t *testing.T, dataDir string, logs ...string) {
	t.Helper()
	err := filepath.WalkDir(dataDir, func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // a live server's temporary file, gone since the listing
		}
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		for _, v := range secrets {
			if bytes.Contains(b, []byte(v)) {
				t.Errorf("plaintext %q in %s", v, path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("scan %s: %v", dataDir, err)
	}
	for _, l := range logs {
		for _, v := range append(secrets, admin) {
			if strings.Contains(l, v) {
				t.Errorf("plaintext or token %q in the server log", v)
			}
		}
	}
}

// TestVaultTransitKMS runs the binary with its KEK in the real Vault:
// records written before a restart read back after it (the DEK is
// unwrapped by Vault again), the hot path keeps working while Vault is
// down (cached keys), and readiness and key-needing calls answer 503.
func TestVaultTransitKMS(t *testing.T) {
	t.Parallel()
	v := vaulttest.Start(t)
	dir := t.TempDir()
	env := append([]string{"VAULT_ADDR=" + v.Addr, "VAULT_TOKEN=" + v.Token}, adminEnv...)
	s := start(t, dir, env, "--kms", "vault", "--vault-key", "av-e2e")
	s.must(200, "GET", "/readyz", "", nil)
	writer, id, tokens, agent := seedRevealable(s, "name", "card")
	reveal := func() {
		t.Helper()
		out := s.must(200, "POST", "/v1/detokenize", agent, map[string]any{"tokens": []any{tokens["name"], tokens["card"]}, "purpose": "e2e"})
		res := out["results"].([]any)
		if res[0].(map[string]any)["value"] != secrets[0] || res[1].(map[string]any)["value"] != secrets[1] {
			t.Fatalf("detokenize: %v", out)
		}
	}
	reveal()
	logs1 := s.logs()
	s.stop()

	key, err := v.Client(t).Logical().Read("transit/keys/av-e2e")
	if err != nil || key == nil {
		t.Fatalf("transit key av-e2e not created in Vault: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "dev-kek.json")); err == nil {
		t.Fatal("a local KEK file exists although the KEK is in Vault")
	}

	s = start(t, dir, env, "--kms", "vault", "--vault-key", "av-e2e")
	got := s.must(200, "GET", "/v1/collections/hr/records/"+id, writer, nil)
	for f, tok := range tokens {
		if got["fields"].(map[string]any)[f] != tok {
			t.Errorf("field %s after restart = %v, want %v", f, got["fields"].(map[string]any)[f], tok)
		}
	}
	reveal() // the DEK is unwrapped by Vault again after the restart
	// The first write after restart unwraps the DEK through Vault; after
	// that the DEK is cached and Vault is not on the write path.
	if status, out := writeOne(s, writer, 1); status != 201 {
		t.Fatalf("write after restart: %d %v", status, out)
	}
	v.Stop()
	if status, out := s.call("GET", "/readyz", "", nil); status != 503 || out["error"].(map[string]any)["code"] != "kms_unavailable" {
		t.Fatalf("readyz with Vault down = %d %v", status, out)
	}
	if status, out := writeOne(s, writer, 2); status != 201 {
		t.Fatalf("write to a loaded collection with Vault down = %d %v; the DEK should be cached", status, out)
	}
	status, out := s.call("POST", "/v1/collections", admin, map[string]any{"name": "new", "fields": []map[string]any{{"name": "a", "type": "string", "sensitive": true}}})
	if status != 503 || out["error"].(map[string]any)["code"] != "kms_unavailable" {
		t.Fatalf("create collection with Vault down = %d %v, want 503 kms_unavailable", status, out)
	}
	s.must(200, "GET", "/healthz", "", nil)
	if status, _ := s.call("GET", "/v1/collections/new", admin, nil); status != 404 {
		t.Fatalf("a collection was half-created while Vault was down: %d", status)
	}
	s.stop()
	assertNoSecrets(t, dir, logs1, s.logs())
}

// TestKill9KeepsAcknowledgedWrites kills the server with SIGKILL while
// writers run, restarts it, and reads back every record that got a 201.
func TestKill9KeepsAcknowledgedWrites(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := start(t, dir, adminEnv)
	writer := setupCollection(s)
	acked := killUnderWrites(s, writer, 8, 1500*time.Millisecond)
	if len(acked) < 50 {
		t.Fatalf("only %d writes acknowledged before the kill", len(acked))
	}
	s = start(t, dir, adminEnv)
	for id, fields := range acked {
		status, got := s.call("GET", "/v1/collections/hr/records/"+id, writer, nil)
		if status != 200 {
			t.Fatalf("acknowledged record %s lost after kill -9: %d", id, status)
		}
		for f, v := range fields {
			if got["fields"].(map[string]any)[f] != v {
				t.Fatalf("record %s field %s = %v after kill -9, want %v", id, f, got["fields"].(map[string]any)[f], v)
			}
		}
	}
	t.Logf("%d acknowledged writes, all present after kill -9", len(acked))
	s.stop()
	assertNoSecrets(t, dir, s.logs())
}

// killUnderWrites runs writers creating records on s for a while, kills
// s with SIGKILL while they run, and returns every record that got a 201
// with the fields it was answered with.
func killUnderWrites(s *server, writer string, writers int, d time.Duration) map[string]map[string]any {
	var mu sync.Mutex
	acked := map[string]map[string]any{}
	stopWriting := make(chan struct{})
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 5 * time.Second}
			for i := 0; ; i++ {
				select {
				case <-stopWriting:
					return
				default:
				}
				b, _ := json.Marshal(map[string]any{"records": []map[string]any{{"fields": map[string]any{"dept": fmt.Sprintf("w%d-%d", w, i), "name": secrets[0], "card": secrets[1]}}}})
				req, _ := http.NewRequest("POST", s.url+"/v1/collections/hr/records", bytes.NewReader(b))
				req.Header.Set("Authorization", "Bearer "+writer)
				resp, err := client.Do(req)
				if err != nil {
					return // the server is gone
				}
				var out map[string]any
				err = json.NewDecoder(resp.Body).Decode(&out)
				resp.Body.Close()
				if resp.StatusCode == 201 && err == nil {
					id, f := firstRecord(out)
					mu.Lock()
					acked[id] = f
					mu.Unlock()
				}
			}
		}()
	}
	time.Sleep(d)
	s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.exited
	close(stopWriting)
	wg.Wait()
	return acked
}

// TestGracefulShutdown sends SIGTERM while writes are in flight: the
// process exits 0 and every acknowledged write is there after a restart.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := start(t, dir, adminEnv)
	writer := setupCollection(s)
	var mu sync.Mutex
	var acked []string
	var wg sync.WaitGroup
	// Authenticated writers, sent concurrently with the SIGTERM.
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				b, _ := json.Marshal(map[string]any{"records": []map[string]any{{"fields": map[string]any{"dept": fmt.Sprint(w, "-", i)}}}})
				req, _ := http.NewRequest("POST", s.url+"/v1/collections/hr/records", bytes.NewReader(b))
				req.Header.Set("Authorization", "Bearer "+writer)
				resp, err := testHTTP.Do(req)
				if err != nil {
					return
				}
				var out map[string]any
				json.NewDecoder(resp.Body).Decode(&out)
				resp.Body.Close()
				if resp.StatusCode == 201 {
					id, _ := firstRecord(out)
					mu.Lock()
					acked = append(acked, id)
					mu.Unlock()
				} else {
					return
				}
			}
		}()
	}
	time.Sleep(700 * time.Millisecond)
	s.stop()
	wg.Wait()
	if !strings.Contains(s.logs(), `"msg":"stopped"`) {
		t.Errorf("no clean stop in the log:\n%s", s.logs())
	}
	s = start(t, dir, adminEnv)
	for _, id := range acked {
		if status, _ := s.call("GET", "/v1/collections/hr/records/"+id, writer, nil); status != 200 {
			t.Fatalf("acknowledged record %s missing after graceful shutdown: %d", id, status)
		}
	}
	t.Logf("%d acknowledged writes survived SIGTERM", len(acked))
}

// TestBootstrapToken checks the generated admin token: printed once on
// first start, working, and not printed again.
func TestBootstrapToken(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := start(t, dir, []string{"AGENTVAULT_ADMIN_TOKEN="})
	var token string
	deadline := time.Now().Add(10 * time.Second)
	for token == "" && time.Now().Before(deadline) {
		if m := regexp.MustCompile(`avt_[A-Z2-7]{52}`).FindString(s.logs()); m != "" {
			token = m
		}
		time.Sleep(50 * time.Millisecond)
	}
	if token == "" {
		t.Fatalf("no bootstrap token printed:\n%s", s.logs())
	}
	if !strings.Contains(s.logs(), "DEVELOPMENT KEK") {
		t.Error("no development-KEK warning with --kms local")
	}
	s.must(200, "GET", "/v1/principals", token, nil)
	s.stop()
	s = start(t, dir, []string{"AGENTVAULT_ADMIN_TOKEN="})
	if strings.Contains(s.logs(), "avt_") {
		t.Error("a token was printed again on the second start")
	}
	s.must(200, "GET", "/v1/principals", token, nil)
}

// TestAuditVerifyCLI checks the offline verifier against a real data
// directory: clean, then after an entry is changed on disk.
func TestAuditVerifyCLI(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := start(t, dir, adminEnv)
	writer := setupCollection(s)
	for i := range 5 {
		if status, out := writeOne(s, writer, i); status != 201 {
			t.Fatalf("write: %d %v", status, out)
		}
	}
	s.stop()
	if code, out := runCLI(t, "audit", "verify", "--data-dir", dir); code != 0 || !strings.Contains(out, `"ok": true`) {
		t.Fatalf("verify clean log: exit %d\n%s", code, out)
	}
	code, out := runCLI(t, "audit", "export", "--data-dir", dir)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) < 8 {
		t.Fatalf("export: exit %d, %d lines", code, len(lines))
	}
	var fourth map[string]any
	if err := json.Unmarshal([]byte(lines[3]), &fourth); err != nil || fourth["seq"] != float64(4) {
		t.Fatalf("export line 4: %s", lines[3])
	}
	for _, v := range append(secrets, admin) {
		if strings.Contains(out, v) {
			t.Fatalf("export holds %q", v)
		}
	}
	if !strings.Contains(out, `"checkpoint"`) {
		t.Fatal("export has no signed checkpoint (one is made at every clean shutdown)")
	}
	// An outside auditor checks the export with the public key alone.
	code, pub := runCLI(t, "audit", "pubkey", "--data-dir", dir)
	if code != 0 || !strings.Contains(pub, "Ed25519") {
		t.Fatalf("pubkey: exit %d %s", code, pub)
	}
	exportFile, pubFile := filepath.Join(t.TempDir(), "audit.jsonl"), filepath.Join(t.TempDir(), "pub.json")
	os.WriteFile(exportFile, []byte(out), 0o600)
	os.WriteFile(pubFile, []byte(pub), 0o600)
	if code, res := runCLI(t, "audit", "verify", "--export", exportFile, "--pubkey", pubFile); code != 0 || !strings.Contains(res, `"checkpoints": 1`) {
		t.Fatalf("verify export: exit %d\n%s", code, res)
	}
	os.WriteFile(exportFile, []byte(strings.Join(lines[:2], "\n")+"\n"+lines[len(lines)-1]+"\n"), 0o600)
	if code, res := runCLI(t, "audit", "verify", "--export", exportFile, "--pubkey", pubFile); code == 0 || !strings.Contains(res, "cut off") {
		t.Fatalf("verify truncated export: exit %d\n%s", code, res)
	}

	// Change one entry on disk, as someone with file access would.
	if err := tamperAuditEntry(filepath.Join(dir, "db"), 4); err != nil {
		t.Fatal(err)
	}
	code, out = runCLI(t, "audit", "verify", "--data-dir", dir)
	if code == 0 || !strings.Contains(out, `"first_bad_seq": 4`) || !strings.Contains(out, "entry 4") {
		t.Fatalf("verify tampered log: exit %d\n%s", code, out)
	}
	// The running server's API says the same.
	s = start(t, dir, adminEnv)
	p := s.must(201, "POST", "/v1/principals", admin, map[string]any{"name": "auditor", "roles": []string{"auditor"}})
	v := s.must(200, "GET", "/v1/audit/verify", p["token"].(string), nil)
	if v["ok"] != false || v["first_bad_seq"] != float64(4) {
		t.Fatalf("GET /v1/audit/verify after tampering: %v", v)
	}
}

// runCLI runs an offline agentvault command and returns its exit code
// and combined output.
func runCLI(t *testing.T, args ...string) (int, string) {
	t.Helper()
	return runCLIEnv(t, nil, args...)
}

// runCLIEnv runs the binary with extra environment variables.
func runCLIEnv(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	cmd := command(2*time.Minute, avBinary, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, string(out)
}

// tamperAuditEntry rewrites one stored audit entry's actor, keeping its
// JSON valid, by opening the Badger files directly as an attacker with
// file access would.
func tamperAuditEntry(dbDir string, seq uint64) error {
	db, err := badger.Open(badger.DefaultOptions(dbDir).WithLogger(nil))
	if err != nil {
		return err
	}
	defer db.Close()
	key := binary.BigEndian.AppendUint64([]byte("a/"), seq)
	return db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if err != nil {
			return err
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		if v, err = auditlog.Decode(v); err != nil { // binary or compressed: its JSON
			return err
		}
		var e map[string]any
		if err := json.Unmarshal(v, &e); err != nil {
			return err
		}
		e["actor"] = "someone-else"
		b, _ := json.Marshal(e)
		return txn.Set(key, b)
	})
}

// TestSavedCheckpointCatchesTruncation, through the binary: the server's
// log ships each checkpoint as it is made; someone with file access cuts
// the log's tail together with the checkpoints stored over it, which
// verify alone cannot see; verify --since-checkpoint with the log lines
// an auditor kept catches it, and the API does the same with the
// checkpoint it handed out.
func TestSavedCheckpointCatchesTruncation(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := start(t, dir, adminEnv)
	writer := setupCollection(s)
	p := s.must(201, "POST", "/v1/principals", admin, map[string]any{"name": "auditor", "roles": []string{"auditor"}})
	auditor := p["token"].(string)
	for i := range 3 {
		writeOne(s, writer, i)
	}
	status, saved := s.raw("GET", "/v1/audit/checkpoint", auditor)
	var cp struct{ Seq uint64 }
	if status != 200 || json.Unmarshal(saved, &cp) != nil || cp.Seq == 0 {
		t.Fatalf("checkpoint: %d %s", status, saved)
	}
	for i := range 3 {
		writeOne(s, writer, 10+i)
	}
	s.stop() // signs a final checkpoint, and logs it
	logFile := filepath.Join(t.TempDir(), "agentvault.log")
	os.WriteFile(logFile, []byte(s.logs()), 0o600)
	if !strings.Contains(s.logs(), `"msg":"audit checkpoint"`) {
		t.Fatal("no checkpoint was logged")
	}
	if code, out := runCLI(t, "audit", "verify", "--data-dir", dir, "--since-checkpoint", logFile); code != 0 || !strings.Contains(out, `"witnessed": 2`) {
		t.Fatalf("verify against the logged checkpoints before the cut: exit %d\n%s", code, out)
	}

	if err := cutAuditTail(filepath.Join(dir, "db"), cp.Seq); err != nil {
		t.Fatal(err)
	}
	if code, out := runCLI(t, "audit", "verify", "--data-dir", dir); code != 0 {
		t.Fatalf("the cut is visible without a saved checkpoint (the test would prove nothing): exit %d\n%s", code, out)
	}
	code, out := runCLI(t, "audit", "verify", "--data-dir", dir, "--since-checkpoint", logFile)
	if code == 0 || !strings.Contains(out, "saved outside") || !strings.Contains(out, "cut off") {
		t.Fatalf("verify --since-checkpoint after the cut: exit %d\n%s", code, out)
	}
	s = start(t, dir, adminEnv)
	v := s.must(200, "GET", "/v1/audit/verify?checkpoint="+url.QueryEscape(string(saved)), auditor, nil)
	if v["ok"] != false || !strings.Contains(v["reason"].(string), "cut off") {
		t.Fatalf("GET /v1/audit/verify with the saved checkpoint: %v", v)
	}
}

// cutAuditTail deletes audit entries from seq on, and every checkpoint
// from seq on, as someone with file access would to hide the newest.
func cutAuditTail(dbDir string, seq uint64) error {
	db, err := badger.Open(badger.DefaultOptions(dbDir).WithLogger(nil))
	if err != nil {
		return err
	}
	defer db.Close()
	return db.Update(func(txn *badger.Txn) error {
		for _, prefix := range []string{"a/", "ac/"} {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefix)})
			var doomed [][]byte
			for it.Seek(binary.BigEndian.AppendUint64([]byte(prefix), seq)); it.ValidForPrefix([]byte(prefix)); it.Next() {
				doomed = append(doomed, it.Item().KeyCopy(nil))
			}
			it.Close()
			for _, k := range doomed {
				if err := txn.Delete(k); err != nil {
					return err
				}
			}
		}
		return nil
	})
}
