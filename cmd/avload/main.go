// Command avload drives a running agentvault (or Vault Transit, for the
// comparison) with concurrent clients and prints throughput and latency.
//
//	avload -url http://127.0.0.1:8080 -token $ADMIN -scenario create -clients 64 -duration 10s
//	avload -scenario batch -batch 1000 ...
//	avload -scenario transit -vault-addr $VAULT_ADDR -vault-token $VAULT_TOKEN
//
// Scenarios:
//   - create:  one record with one sensitive field per request (durable)
//   - batch:   -batch records with one sensitive field each per request
//   - transit: Vault Transit encrypt of a 16-byte value per request, the
//     baseline the create scenario is compared with
//   - detokenize: reveal -batch tokens per request under a grant (grant
//     check, decryption and a durable, hash-chained audit entry each)
//   - read:    read one stored record (tokens, nothing revealed) per
//     request: the same HTTP, authentication and JSON path as create with
//     no durable write, to show what a request that writes nothing costs
//
// For an https server with a private CA, -ca-file (or AGENTVAULT_CACERT).
// For agentvault scenarios it creates its own collection and writer
// principal with the admin token. It only talks to the address it is given,
// for a bounded time, and stops by itself.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

type config struct {
	url, token, scenario  string
	records               int
	vaultAddr, vaultToken string
	clients, batch        int
	duration, warmup      time.Duration
	jsonOut, mdOut        bool
	serverPID             int
	caFile                string // PEM CAs to trust for https (default: the system's)
	wrkScript             string // write the scenario's requests as a wrk script here instead of measuring
}

// Result is one scenario's measurement.
type Result struct {
	Scenario      string  `json:"scenario"`
	Clients       int     `json:"clients"`
	Batch         int     `json:"batch"`
	Seconds       float64 `json:"seconds"`
	Requests      int64   `json:"requests"`
	Errors        int64   `json:"errors"`
	RequestsPerS  float64 `json:"requests_per_s"`
	ValuesPerS    float64 `json:"values_per_s"`
	P50Millis     float64 `json:"p50_ms"`
	P99Millis     float64 `json:"p99_ms"`
	FirstErrorMsg string  `json:"first_error,omitempty"`
	// CPU time per successful request in the measured window: the
	// server's (with -server-pid) and this load tool's own, in µs.
	ServerCPUMicros float64 `json:"server_cpu_us_per_req,omitempty"`
	ClientCPUMicros float64 `json:"client_cpu_us_per_req"`
}

func main() {
	var c config
	flag.StringVar(&c.url, "url", "http://127.0.0.1:8080", "agentvault base URL (loopback)")
	flag.StringVar(&c.token, "token", os.Getenv("AGENTVAULT_ADMIN_TOKEN"), "admin token (default $AGENTVAULT_ADMIN_TOKEN)")
	flag.StringVar(&c.scenario, "scenario", "create", "create, batch, detokenize, read, agent-read, page, search, schema, mcp-read, mcp-detokenize or transit")
	flag.IntVar(&c.records, "records", 100000, "records in the collection, for -scenario search")
	flag.StringVar(&c.vaultAddr, "vault-addr", os.Getenv("VAULT_ADDR"), "Vault address, for -scenario transit")
	flag.StringVar(&c.vaultToken, "vault-token", os.Getenv("VAULT_TOKEN"), "Vault token, for -scenario transit")
	flag.IntVar(&c.clients, "clients", 64, "concurrent clients")
	flag.IntVar(&c.batch, "batch", 1000, "records per request, for -scenario batch")
	flag.DurationVar(&c.duration, "duration", 10*time.Second, "how long to measure (at most 10m)")
	flag.DurationVar(&c.warmup, "warmup", 2*time.Second, "unmeasured run before measuring")
	flag.BoolVar(&c.jsonOut, "json", false, "print the result as one JSON line")
	flag.BoolVar(&c.mdOut, "md", false, "print the result as one Markdown table row (scenario | clients | batch | req/s | values/s | p50 | p99 | errors)")
	flag.StringVar(&c.caFile, "ca-file", os.Getenv("AGENTVAULT_CACERT"), "PEM CAs to trust for an https -url or -vault-addr (AGENTVAULT_CACERT; default: the system's)")
	flag.IntVar(&c.serverPID, "server-pid", 0, "pid of the server under test, to report its CPU time per request (Linux /proc)")
	flag.StringVar(&c.wrkScript, "wrk-script", "", "set the scenario up, then write its requests to this file as a Lua script for wrk instead of measuring (transit, create, batch, schema, read, agent-read, detokenize)")
	flag.Parse()
	if c.duration > 10*time.Minute {
		c.duration = 10 * time.Minute
	}
	if c.wrkScript != "" {
		if err := writeWrkScript(c); err != nil {
			fmt.Fprintln(os.Stderr, "avload:", err)
			os.Exit(1)
		}
		return
	}
	res, err := run(c)
	if err != nil {
		fmt.Fprintln(os.Stderr, "avload:", err)
		os.Exit(1)
	}
	if c.jsonOut {
		json.NewEncoder(os.Stdout).Encode(res)
		return
	}
	if c.mdOut {
		fmt.Printf("| %s | %d | %d | %.0f | %.0f | %.2f | %.2f | %d/%d | %.0f | %.0f |\n",
			res.Scenario, res.Clients, res.Batch, res.RequestsPerS, res.ValuesPerS, res.P50Millis, res.P99Millis, res.Errors, res.Requests, res.ServerCPUMicros, res.ClientCPUMicros)
		return
	}
	fmt.Printf("%-8s clients=%d batch=%d  %.0f req/s  %.0f values/s  p50=%.2fms p99=%.2fms  errors=%d/%d\n",
		res.Scenario, res.Clients, res.Batch, res.RequestsPerS, res.ValuesPerS, res.P50Millis, res.P99Millis, res.Errors, res.Requests)
	if res.FirstErrorMsg != "" {
		fmt.Println("first error:", res.FirstErrorMsg)
	}
}

// request is one operation: it returns an error for any non-success.
type request func(ctx context.Context, client *http.Client) error

func run(c config) (Result, error) {
	tr := &http.Transport{MaxIdleConns: c.clients * 2, MaxIdleConnsPerHost: c.clients * 2, IdleConnTimeout: time.Minute}
	if c.caFile != "" {
		pem, err := os.ReadFile(c.caFile)
		if err != nil {
			return Result{}, fmt.Errorf("-ca-file: %w", err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return Result{}, fmt.Errorf("-ca-file %s: no PEM certificate", c.caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: tr}
	var req request
	values := 1
	switch c.scenario {
	case "create", "batch":
		n := 1
		if c.scenario == "batch" {
			n, values = c.batch, c.batch
		}
		coll, writer, err := setup(client, c)
		if err != nil {
			return Result{}, err
		}
		req = createRecords(c.url, coll, writer, n)
	case "read":
		coll, writer, err := setup(client, c)
		if err != nil {
			return Result{}, err
		}
		ids, err := storeRecords(client, c.url, coll, writer)
		if err != nil {
			return Result{}, err
		}
		req = readRecords(c.url, coll, writer, ids, "")
	case "schema":
		coll, writer, err := setup(client, c)
		if err != nil {
			return Result{}, err
		}
		url := c.url + "/v1/collections/" + coll
		req = func(ctx context.Context, client *http.Client) error {
			return get(client, url, "Authorization", writer, nil)
		}
	case "agent-read":
		coll, ids, agent, err := setupAgentRead(client, c)
		if err != nil {
			return Result{}, err
		}
		req = readRecords(c.url, coll, agent, ids, "?purpose=load")
	case "page":
		coll, writer, err := setup(client, c)
		if err != nil {
			return Result{}, err
		}
		if _, err := storeRecords(client, c.url, coll, writer); err != nil {
			return Result{}, err
		}
		values = 100
		url := c.url + "/v1/collections/" + coll + "/records?limit=100"
		req = func(ctx context.Context, client *http.Client) error {
			return get(client, url, "Authorization", writer, nil)
		}
	case "search":
		coll, writer, err := setupSearch(client, c)
		if err != nil {
			return Result{}, err
		}
		req = searchByValue(c.url, coll, writer, c.records)
	case "mcp-read":
		coll, ids, agent, err := setupAgentRead(client, c)
		if err != nil {
			return Result{}, err
		}
		sess, err := mcpSession(c.url, agent, tr)
		if err != nil {
			return Result{}, err
		}
		defer sess.Close()
		req = mcpGetRecord(sess, coll, ids)
	case "mcp-detokenize":
		agent, tokens, err := setupDetokenize(client, c)
		if err != nil {
			return Result{}, err
		}
		sess, err := mcpSession(c.url, agent, tr)
		if err != nil {
			return Result{}, err
		}
		defer sess.Close()
		req = mcpDetokenize(sess, tokens)
	case "detokenize":
		agent, tokens, err := setupDetokenize(client, c)
		if err != nil {
			return Result{}, err
		}
		values = c.batch
		req = detokenize(c.url, agent, tokens, c.batch)
	case "redact":
		values = len(ticketValues)
		req = redact(c.url, c.token)
	case "restore":
		agent, answer, err := setupRestore(client, c)
		if err != nil {
			return Result{}, err
		}
		values = len(ticketValues)
		req = restore(c.url, agent, answer)
	case "transit":
		if err := transitKey(client, c); err != nil {
			return Result{}, err
		}
		req = transitEncrypt(c.vaultAddr, c.vaultToken)
	default:
		return Result{}, fmt.Errorf("unknown scenario %q", c.scenario)
	}
	if c.warmup > 0 {
		measure(client, req, c.clients, c.warmup)
	}
	srv0, self0 := processCPU(c.serverPID), selfCPU()
	res := measure(client, req, c.clients, c.duration)
	srv1, self1 := processCPU(c.serverPID), selfCPU()
	if ok := res.Requests - res.Errors; ok > 0 {
		if c.serverPID > 0 && srv0 >= 0 && srv1 >= 0 {
			res.ServerCPUMicros = float64((srv1 - srv0).Microseconds()) / float64(ok)
		}
		res.ClientCPUMicros = float64((self1 - self0).Microseconds()) / float64(ok)
	}
	res.Scenario, res.Clients = c.scenario, c.clients
	if c.scenario == "batch" || c.scenario == "detokenize" {
		res.Batch = c.batch
	}
	res.ValuesPerS = res.RequestsPerS * float64(values)
	return res, nil
}

// wrkPlan is a scenario's requests as wrk sends them: one method, the
// paths and bodies taken in turn, and one credential header.
type wrkPlan struct {
	method       string
	paths        []string
	bodies       [][]byte
	header, auth string
}

// writeWrkScript sets the scenario up as run does, then writes a Lua
// script that makes wrk send the same requests (same paths, bodies and
// credentials as the load tool's own clients), so that the server can be
// measured under an independent load generator.
func writeWrkScript(c config) error {
	p, err := wrkPlanFor(c)
	if err != nil {
		return err
	}
	return os.WriteFile(c.wrkScript, []byte(p.lua()), 0o600)
}

// wrkPlanFor sets the scenario up and returns its requests.
func wrkPlanFor(c config) (wrkPlan, error) {
	client := &http.Client{Timeout: 30 * time.Second}
	bearer := func(token string) (string, string) { return "Authorization", "Bearer " + token }
	var p wrkPlan
	switch c.scenario {
	case "transit":
		if err := transitKey(client, c); err != nil {
			return p, err
		}
		p = wrkPlan{method: "POST", paths: []string{"/v1/transit/encrypt/avload"}, bodies: [][]byte{transitBody()}, header: "X-Vault-Token", auth: c.vaultToken}
	case "create", "batch":
		n := 1
		if c.scenario == "batch" {
			n = c.batch
		}
		coll, writer, err := setup(client, c)
		if err != nil {
			return p, err
		}
		p = wrkPlan{method: "POST", paths: []string{"/v1/collections/" + coll + "/records"}, bodies: [][]byte{recordsBody(n)}}
		p.header, p.auth = bearer(writer)
	case "schema":
		coll, writer, err := setup(client, c)
		if err != nil {
			return p, err
		}
		p = wrkPlan{method: "GET", paths: []string{"/v1/collections/" + coll}}
		p.header, p.auth = bearer(writer)
	case "read", "agent-read":
		var coll, token, query string
		var ids []string
		var err error
		if c.scenario == "read" {
			if coll, token, err = setup(client, c); err == nil {
				ids, err = storeRecords(client, c.url, coll, token)
			}
		} else {
			coll, ids, token, err = setupAgentRead(client, c)
			query = "?purpose=load"
		}
		if err != nil {
			return p, err
		}
		p = wrkPlan{method: "GET"}
		for _, id := range ids {
			p.paths = append(p.paths, "/v1/collections/"+coll+"/records/"+id+query)
		}
		p.header, p.auth = bearer(token)
	case "detokenize":
		agent, tokens, err := setupDetokenize(client, c)
		if err != nil {
			return p, err
		}
		p = wrkPlan{method: "POST", paths: []string{"/v1/detokenize"}}
		for start := 0; start < len(tokens) && len(p.bodies) < 1000; start += c.batch {
			p.bodies = append(p.bodies, detokenizeBody(tokens, start, c.batch))
		}
		p.header, p.auth = bearer(agent)
	default:
		return p, fmt.Errorf("no wrk script for scenario %q", c.scenario)
	}
	return p, nil
}

// lua is the plan as a wrk script. Strings are Lua long strings, which
// need no escaping: no path, body or credential holds "]==]".
func (p wrkPlan) lua() string {
	quote := func(s string) string { return "[==[" + s + "]==]" }
	var b strings.Builder
	b.WriteString("-- written by avload -wrk-script\nlocal paths = {\n")
	for _, path := range p.paths {
		b.WriteString("  " + quote(path) + ",\n")
	}
	b.WriteString("}\nlocal bodies = {\n")
	for _, body := range p.bodies {
		b.WriteString("  " + quote(string(body)) + ",\n")
	}
	b.WriteString("}\n")
	fmt.Fprintf(&b, "wrk.headers[ %s ] = %s\n", quote(p.header), quote(p.auth)) // "[ [" : "[[" would open a long string
	if len(p.bodies) > 0 {
		b.WriteString("wrk.headers[\"Content-Type\"] = \"application/json\"\n")
	}
	fmt.Fprintf(&b, `local i = 0
request = function()
  i = i + 1
  local body = nil
  if #bodies > 0 then body = bodies[i %% #bodies + 1] end
  return wrk.format(%s, paths[i %% #paths + 1], nil, body)
end
`, quote(p.method))
	return b.String()
}

func measure(client *http.Client, req request, clients int, d time.Duration) Result {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		lat      []time.Duration
		requests atomic.Int64
		errs     atomic.Int64
		firstErr atomic.Value
	)
	start := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := make([]time.Duration, 0, 4096)
			for ctx.Err() == nil {
				t0 := time.Now()
				err := req(ctx, client)
				if ctx.Err() != nil {
					break // cut off by the deadline: not counted
				}
				requests.Add(1)
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	slices.Sort(lat)
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[int(float64(len(lat)-1)*p)].Microseconds()) / 1000
	}
	r := Result{Seconds: elapsed, Requests: requests.Load(), Errors: errs.Load(), P50Millis: pct(0.50), P99Millis: pct(0.99)}
	r.RequestsPerS = float64(r.Requests-r.Errors) / elapsed
	if v, ok := firstErr.Load().(string); ok {
		r.FirstErrorMsg = v
	}
	return r
}

func post(client *http.Client, url, authHeader, auth string, body []byte, out any) error {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	return do(client, req, authHeader, auth, out)
}

func get(client *http.Client, url, authHeader, auth string, out any) error {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	return do(client, req, authHeader, auth, out)
}

func do(client *http.Client, req *http.Request, authHeader, auth string, out any) error {
	if authHeader == "Authorization" {
		auth = "Bearer " + auth
	}
	req.Header.Set(authHeader, auth)
	if req.Body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %d %s", req.Method, req.URL, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// setup creates a fresh collection and writer principal, and returns the
// collection's name and the writer's token.
func setup(client *http.Client, c config) (string, string, error) {
	name := fmt.Sprintf("load_%d", time.Now().UnixNano())
	schema := fmt.Sprintf(`{"name":%q,"fields":[{"name":"ref","type":"string"},{"name":"secret","type":"string","sensitive":true}]}`, name)
	if err := post(client, c.url+"/v1/collections", "Authorization", c.token, []byte(schema), nil); err != nil {
		return "", "", fmt.Errorf("create collection: %w", err)
	}
	var p struct{ Token string }
	if err := post(client, c.url+"/v1/principals", "Authorization", c.token, []byte(`{"name":"avload-`+name+`","roles":["writer"]}`), &p); err != nil {
		return "", "", fmt.Errorf("create writer: %w", err)
	}
	return name, p.Token, nil
}

// recordsBody is a create request of n records with one sensitive field.
func recordsBody(n int) []byte {
	var body bytes.Buffer
	body.WriteString(`{"records":[`)
	for i := range n {
		if i > 0 {
			body.WriteByte(',')
		}
		fmt.Fprintf(&body, `{"fields":{"ref":"r%d","secret":"value-%08d"}}`, i, i)
	}
	body.WriteString(`]}`)
	return body.Bytes()
}

func createRecords(base, coll, token string, n int) request {
	payload := recordsBody(n)
	url := base + "/v1/collections/" + coll + "/records"
	return func(ctx context.Context, client *http.Client) error {
		return post(client, url, "Authorization", token, payload, nil)
	}
}

// transitKey makes the Transit key the transit scenario encrypts with.
func transitKey(client *http.Client, c config) error {
	if c.vaultAddr == "" || c.vaultToken == "" {
		return fmt.Errorf("-scenario transit needs -vault-addr and -vault-token")
	}
	if err := post(client, c.vaultAddr+"/v1/transit/keys/avload", "X-Vault-Token", c.vaultToken, []byte(`{}`), nil); err != nil {
		return fmt.Errorf("create transit key: %w", err)
	}
	return nil
}

// transitBody is a Transit encrypt request of a 16-byte value.
func transitBody() []byte {
	return []byte(`{"plaintext":"` + base64.StdEncoding.EncodeToString([]byte("value-0000000001")) + `"}`)
}

func transitEncrypt(addr, token string) request {
	payload := transitBody()
	return func(ctx context.Context, client *http.Client) error {
		return post(client, addr+"/v1/transit/encrypt/avload", "X-Vault-Token", token, payload, nil)
	}
}

// storeRecords stores 1,000 records and returns their ids.
func storeRecords(client *http.Client, base, coll, writer string) ([]string, error) {
	var out struct{ Records []struct{ ID string } }
	if err := post(client, base+"/v1/collections/"+coll+"/records", "Authorization", writer, recordsBody(1000), &out); err != nil {
		return nil, fmt.Errorf("store records: %w", err)
	}
	ids := make([]string, len(out.Records))
	for i, r := range out.Records {
		ids[i] = r.ID
	}
	return ids, nil
}

func readRecords(base, coll, token string, ids []string, query string) request {
	var next atomic.Int64
	return func(ctx context.Context, client *http.Client) error {
		id := ids[int(next.Add(1))%len(ids)]
		return get(client, base+"/v1/collections/"+coll+"/records/"+id+query, "Authorization", token, nil)
	}
}

// setupAgentRead stores 1,000 records and creates an agent whose grant
// shows both fields (reveal none), for audited agent reads.
func setupAgentRead(client *http.Client, c config) (coll string, ids []string, agent string, err error) {
	coll, writer, err := setup(client, c)
	if err != nil {
		return "", nil, "", err
	}
	if ids, err = storeRecords(client, c.url, coll, writer); err != nil {
		return "", nil, "", err
	}
	var a struct{ ID, Token string }
	if err := post(client, c.url+"/v1/principals", "Authorization", c.token, []byte(`{"name":"avload-reader-`+coll+`","roles":["agent"]}`), &a); err != nil {
		return "", nil, "", fmt.Errorf("create agent: %w", err)
	}
	grant := fmt.Sprintf(`{"principal_id":%q,"collection":%q,"fields":["ref","secret"],"purpose":"load","ttl":"1h","reveal":"none"}`, a.ID, coll)
	if err := post(client, c.url+"/v1/grants", "Authorization", c.token, []byte(grant), nil); err != nil {
		return "", nil, "", fmt.Errorf("create grant: %w", err)
	}
	return coll, ids, a.Token, nil
}

// setupSearch creates a collection with a deterministic email field and
// stores c.records records, 1,000 per request.
func setupSearch(client *http.Client, c config) (string, string, error) {
	name := fmt.Sprintf("search_%d", time.Now().UnixNano())
	schema := fmt.Sprintf(`{"name":%q,"fields":[{"name":"ref","type":"string"},{"name":"email","type":"string","sensitive":true,"token":"deterministic"}]}`, name)
	if err := post(client, c.url+"/v1/collections", "Authorization", c.token, []byte(schema), nil); err != nil {
		return "", "", fmt.Errorf("create collection: %w", err)
	}
	var p struct{ Token string }
	if err := post(client, c.url+"/v1/principals", "Authorization", c.token, []byte(`{"name":"avload-`+name+`","roles":["writer"]}`), &p); err != nil {
		return "", "", fmt.Errorf("create writer: %w", err)
	}
	for start := 0; start < c.records; start += 1000 {
		var body bytes.Buffer
		body.WriteString(`{"records":[`)
		for i := start; i < min(start+1000, c.records); i++ {
			if i > start {
				body.WriteByte(',')
			}
			fmt.Fprintf(&body, `{"fields":{"ref":"r%d","email":"user%d@example.com"}}`, i, i)
		}
		body.WriteString(`]}`)
		if err := post(client, c.url+"/v1/collections/"+name+"/records", "Authorization", p.Token, body.Bytes(), nil); err != nil {
			return "", "", fmt.Errorf("store records: %w", err)
		}
	}
	return name, p.Token, nil
}

// searchByValue finds one record by its deterministic email, a different
// one each request.
func searchByValue(base, coll, token string, n int) request {
	var next atomic.Int64
	url := base + "/v1/collections/" + coll + "/records/search"
	return func(ctx context.Context, client *http.Client) error {
		i := int(next.Add(7919)) % n
		body := []byte(fmt.Sprintf(`{"where":{"email":"user%d@example.com"}}`, i))
		var out struct{ Records []json.RawMessage }
		if err := post(client, url, "Authorization", token, body, &out); err != nil {
			return err
		}
		if len(out.Records) != 1 {
			return fmt.Errorf("search found %d records, want 1", len(out.Records))
		}
		return nil
	}
}

// setupDetokenize stores 2,000 records, creates an agent with an unlimited
// plain grant on their sensitive field, and returns the agent's token and
// the records' tokens.
func setupDetokenize(client *http.Client, c config) (string, []string, error) {
	coll, writer, err := setup(client, c)
	if err != nil {
		return "", nil, err
	}
	var tokens []string
	for range 2 {
		var out struct {
			Records []struct{ Fields map[string]any }
		}
		if err := post(client, c.url+"/v1/collections/"+coll+"/records", "Authorization", writer, recordsBody(1000), &out); err != nil {
			return "", nil, fmt.Errorf("store records: %w", err)
		}
		for _, r := range out.Records {
			tokens = append(tokens, r.Fields["secret"].(string))
		}
	}
	var agent struct{ ID, Token string }
	if err := post(client, c.url+"/v1/principals", "Authorization", c.token, []byte(`{"name":"avload-agent-`+coll+`","roles":["agent"]}`), &agent); err != nil {
		return "", nil, fmt.Errorf("create agent: %w", err)
	}
	grant := fmt.Sprintf(`{"principal_id":%q,"collection":%q,"fields":["secret"],"purpose":"load","ttl":"1h","reveal":"plain"}`, agent.ID, coll)
	if err := post(client, c.url+"/v1/grants", "Authorization", c.token, []byte(grant), nil); err != nil {
		return "", nil, fmt.Errorf("create grant: %w", err)
	}
	return agent.Token, tokens, nil
}

// detokenizeBody asks to reveal n tokens, from the start-th on (in turn).
func detokenizeBody(tokens []string, start, n int) []byte {
	pick := make([]string, n)
	for i := range pick {
		pick[i] = tokens[(start+i)%len(tokens)]
	}
	body, _ := json.Marshal(map[string]any{"tokens": pick, "purpose": "load"})
	return body
}

func detokenize(base, token string, tokens []string, n int) request {
	var next atomic.Int64
	return func(ctx context.Context, client *http.Client) error {
		body := detokenizeBody(tokens, int(next.Add(int64(n))), n)
		var out struct{ Results []struct{ Status string } }
		if err := post(client, base+"/v1/detokenize", "Authorization", token, body, &out); err != nil {
			return err
		}
		for _, r := range out.Results {
			if r.Status != "ok" {
				return fmt.Errorf("token not revealed: %s", r.Status)
			}
		}
		return nil
	}
}

// ticketValues are the sensitive values of the redact scenario's ticket.
var ticketValues = []string{"maria.gonzalez@example.com", "+44 20 7946 0958", "4111 1111 1111 1111", "DE89 3704 0044 0532 0130 00", "123-45-6789", "203.0.113.42", "AKIAIOSFODNN7EXAMPLE", "1985-04-12"}

// ticket is a 2 KB support ticket holding ticketValues among prose.
func ticket() string {
	v := ticketValues
	return "Subject: refund request\n\nHello team,\n\nThe customer Maria Gonzalez (" + v[0] + ", phone " + v[1] + ") wrote in about a " +
		"double charge on her card " + v[2] + ". She asks for the refund to go to her account " + v[3] + " instead. For the " +
		"identity check she gave SSN " + v[4] + " and date of birth: " + v[7] + ". The login came from " + v[5] + ", which matches " +
		"her usual location. Engineering notes that an old deploy script still held the key " + v[6] + "; it has been rotated.\n\n" +
		strings.Repeat("Please check the order history, confirm the duplicate transaction with the payment provider and reply "+
			"within two business days with the outcome and the expected date of the refund. ", 9) + "\n\nThanks,\nSupport\n"
}

// redact posts the ticket to /v1/redact; its values are held after the
// first request, so each one is detection plus the lookups that find them.
func redact(base, token string) request {
	body, _ := json.Marshal(map[string]any{"text": ticket()})
	return func(ctx context.Context, client *http.Client) error {
		var out struct{ Entities []struct{ Type string } }
		if err := post(client, base+"/v1/redact", "Authorization", token, body, &out); err != nil {
			return err
		}
		if len(out.Entities) != len(ticketValues) {
			return fmt.Errorf("redact found %d values, want %d", len(out.Entities), len(ticketValues))
		}
		return nil
	}
}

// setupRestore redacts the ticket into a text collection of its own and
// makes an agent whose grant reveals every entity type there; the answer
// to restore is the redacted ticket.
func setupRestore(client *http.Client, c config) (agentToken, answer string, err error) {
	coll := fmt.Sprintf("load_text_%d", time.Now().UnixNano())
	body, _ := json.Marshal(map[string]any{"text": ticket(), "collection": coll})
	var red struct{ Text string }
	if err := post(client, c.url+"/v1/redact", "Authorization", c.token, body, &red); err != nil {
		return "", "", fmt.Errorf("redact: %w", err)
	}
	var agent struct{ ID, Token string }
	if err := post(client, c.url+"/v1/principals", "Authorization", c.token, []byte(`{"name":"avload-agent-`+coll+`","roles":["agent"]}`), &agent); err != nil {
		return "", "", fmt.Errorf("create agent: %w", err)
	}
	grant, _ := json.Marshal(map[string]any{"principal_id": agent.ID, "collection": coll, "purpose": "load", "ttl": "1h", "reveal": "plain",
		"fields": []string{"email", "phone", "credit_card", "iban", "us_ssn", "ip_address", "secret", "date_of_birth"}})
	if err := post(client, c.url+"/v1/grants", "Authorization", c.token, grant, nil); err != nil {
		return "", "", fmt.Errorf("create grant: %w", err)
	}
	return agent.Token, red.Text, nil
}

// restore posts the redacted ticket to /v1/restore: every token revealed
// under the grant, one durable audit entry per request.
func restore(base, token, answer string) request {
	body, _ := json.Marshal(map[string]any{"text": answer, "purpose": "load"})
	return func(ctx context.Context, client *http.Client) error {
		var out struct{ Results []struct{ Status string } }
		if err := post(client, base+"/v1/restore", "Authorization", token, body, &out); err != nil {
			return err
		}
		if len(out.Results) != len(ticketValues) {
			return fmt.Errorf("restore answered %d tokens, want %d", len(out.Results), len(ticketValues))
		}
		for _, r := range out.Results {
			if r.Status != "ok" {
				return fmt.Errorf("token not restored: %s", r.Status)
			}
		}
		return nil
	}
}

// processCPU reads a process's user+system CPU time from /proc; -1 when
// pid is 0 or unreadable.
func processCPU(pid int) time.Duration {
	if pid <= 0 {
		return -1
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	rest := string(b[strings.LastIndexByte(string(b), ')')+2:])
	f := strings.Fields(rest)
	if len(f) < 13 {
		return -1
	}
	var utime, stime int64
	fmt.Sscan(f[11], &utime)
	fmt.Sscan(f[12], &stime)
	const ticks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticks
}

// selfCPU is this process's user+system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// bearerTransport adds the agent's token to every MCP request.
type bearerTransport struct {
	token string
	next  http.RoundTripper
}

func (b bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

// mcpSession opens one MCP session over streamable HTTP, shared by every
// client goroutine (calls are multiplexed).
func mcpSession(base, token string, tr http.RoundTripper) (*mcp.ClientSession, error) {
	c := mcp.NewClient(&mcp.Implementation{Name: "avload", Version: "1"}, nil)
	sess, err := c.Connect(context.Background(), &mcp.StreamableClientTransport{
		Endpoint: base + "/mcp", HTTPClient: &http.Client{Timeout: 30 * time.Second, Transport: bearerTransport{token, tr}},
		MaxRetries: -1, DisableStandaloneSSE: true,
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("connect to /mcp: %w", err)
	}
	return sess, nil
}

func mcpCall(ctx context.Context, sess *mcp.ClientSession, name string, args map[string]any) error {
	res, err := sess.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		return err
	}
	if res.IsError {
		return fmt.Errorf("%s: %v", name, res.Content)
	}
	return nil
}

// mcpGetRecord reads one record per call through the get_record tool.
func mcpGetRecord(sess *mcp.ClientSession, coll string, ids []string) request {
	var next atomic.Int64
	return func(ctx context.Context, _ *http.Client) error {
		id := ids[int(next.Add(1))%len(ids)]
		return mcpCall(ctx, sess, "get_record", map[string]any{"collection": coll, "id": id, "purpose": "load"})
	}
}

// mcpDetokenize reveals one token per call through the detokenize tool.
func mcpDetokenize(sess *mcp.ClientSession, tokens []string) request {
	var next atomic.Int64
	return func(ctx context.Context, _ *http.Client) error {
		tok := tokens[int(next.Add(1))%len(tokens)]
		return mcpCall(ctx, sess, "detokenize", map[string]any{"tokens": []string{tok}, "purpose": "load"})
	}
}
