package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

const keysUsage = `usage: agentvault keys <command> [flags]

  status                                 the KEK and every collection's data keys
  rotate --target kek                    rotate the KEK and rewrap every keyset
  rotate --target dek --collection C     add a new primary data key to C
  reencrypt --collection C [--detach]    re-encrypt C under its primary key, with progress
  disable --collection C --key-id ID     disable an old data key (refused while in use)
  destroy --collection C --key-id ID     destroy an old data key for good (refused while in use)

Every command talks to a running server: --server (or AGENTVAULT_URL,
default http://127.0.0.1:8080) with an operator token from --token (or
AGENTVAULT_TOKEN). For an https server with a private CA, --ca-file (or
AGENTVAULT_CACERT); if it requires client certificates, --client-cert and
--client-key (or AGENTVAULT_CLIENT_CERT, AGENTVAULT_CLIENT_KEY). The token
goes over plain http only to a loopback address, unless --insecure-http
(or AGENTVAULT_INSECURE_HTTP=1) says the network is trusted; redirects are
never followed with it.
`

// client calls a running agentvault server.
type client struct {
	server, token string
	http          *http.Client
	// TLS: the CAs to trust (default: the system's) and, for a server
	// that requires client certificates, this client's pair.
	caFile, certFile, keyFile string
	// insecureHTTP allows sending the token over plain http beyond
	// loopback.
	insecureHTTP bool
	// header is added to every request (agentvault mcp says where its
	// calls come from).
	header http.Header
}

// apiError is the contract's error shape.
type apiError struct {
	Status  int
	Code    string
	Message string
}

func (e *apiError) Error() string { return fmt.Sprintf("%s (%d %s)", e.Message, e.Status, e.Code) }

// ErrorCode and ErrorMessage give the API's answer to the MCP tools.
func (e *apiError) ErrorCode() string    { return e.Code }
func (e *apiError) ErrorMessage() string { return e.Message }

func (c *client) call(method, path string, body, out any) error {
	resp, err := c.request(method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return err
	}
	if out != nil {
		return json.Unmarshal(raw, out)
	}
	return nil
}

// request sends a request with the token and returns the response when
// its status is 2xx; otherwise it reads the contract's error shape into
// an *apiError.
func (c *client) request(method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, strings.TrimRight(c.server, "/")+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	for k, v := range c.header {
		req.Header[k] = v
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach %s: %w", c.server, err)
	}
	if resp.StatusCode < 300 {
		return resp, nil
	}
	if resp.StatusCode < 400 {
		resp.Body.Close()
		return nil, fmt.Errorf("%s answered %d, a redirect to %q: not followed, so the token is not sent anywhere else; point --server (AGENTVAULT_URL) at the server itself", c.server, resp.StatusCode, resp.Header.Get("Location"))
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	var e struct {
		Error struct{ Code, Message string }
	}
	if json.Unmarshal(raw, &e) == nil && e.Error.Code != "" {
		return nil, &apiError{Status: resp.StatusCode, Code: e.Error.Code, Message: e.Error.Message}
	}
	return nil, &apiError{Status: resp.StatusCode, Code: "http", Message: strings.TrimSpace(string(raw))}
}

func clientFlags(fs *flag.FlagSet) *client {
	c := &client{http: &http.Client{
		Timeout: 5 * time.Minute,
		// A redirect would resend the request, token and all, to wherever
		// the answer points (another port, another host): never follow.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
	server := os.Getenv("AGENTVAULT_URL")
	if server == "" {
		server = "http://127.0.0.1:8080"
	}
	fs.StringVar(&c.server, "server", server, "agentvault server URL (AGENTVAULT_URL)")
	fs.StringVar(&c.token, "token", os.Getenv("AGENTVAULT_TOKEN"), "operator API token (AGENTVAULT_TOKEN); prefer the environment: flags show in the process list")
	fs.StringVar(&c.caFile, "ca-file", os.Getenv("AGENTVAULT_CACERT"), "PEM CAs to trust for an https server (AGENTVAULT_CACERT; default: the system's)")
	fs.StringVar(&c.certFile, "client-cert", os.Getenv("AGENTVAULT_CLIENT_CERT"), "PEM client certificate, for a server that requires one (AGENTVAULT_CLIENT_CERT)")
	fs.StringVar(&c.keyFile, "client-key", os.Getenv("AGENTVAULT_CLIENT_KEY"), "PEM key of --client-cert (AGENTVAULT_CLIENT_KEY)")
	fs.BoolVar(&c.insecureHTTP, "insecure-http", os.Getenv("AGENTVAULT_INSECURE_HTTP") == "1", "allow sending the token over plain http to a non-loopback address (AGENTVAULT_INSECURE_HTTP=1)")
	return c
}

// setupTLS checks where the token will go and configures the client's TLS
// from its flags. Plain http is refused beyond loopback unless
// --insecure-http: the token would cross the network in the clear.
func (c *client) setupTLS() error {
	u, err := url.Parse(c.server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--server (AGENTVAULT_URL) %q: want an http(s) URL such as https://vault.example.com", c.server)
	}
	if u.Scheme == "http" && !loopbackHost(u.Hostname()) && !c.insecureHTTP {
		return fmt.Errorf("refusing to send the API token over plain http to %s: use https, or --insecure-http (AGENTVAULT_INSECURE_HTTP=1) if this network is trusted", u.Host)
	}
	if c.caFile == "" && c.certFile == "" && c.keyFile == "" {
		return nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.caFile != "" {
		pool, err := loadCertPool(c.caFile)
		if err != nil {
			return fmt.Errorf("--ca-file: %w", err)
		}
		cfg.RootCAs = pool
	}
	if c.certFile != "" || c.keyFile != "" {
		pair, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
		if err != nil {
			return fmt.Errorf("client certificate (--client-cert, --client-key): %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg
	c.http.Transport = tr
	return nil
}

// loopbackHost reports whether a URL's host names this machine only:
// "localhost" or a loopback IP. Other names are not resolved.
func loopbackHost(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

func keysCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stderr, keysUsage)
		return errUsage
	}
	fs := flag.NewFlagSet("keys "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := clientFlags(fs)
	target := fs.String("target", "", `what to rotate: "kek" or "dek"`)
	coll := fs.String("collection", "", "collection")
	keyID := fs.String("key-id", "", "data key id (from keys status)")
	detach := fs.Bool("detach", false, "reencrypt: start the job and return without waiting")
	every := fs.Duration("poll", 250*time.Millisecond, "reencrypt: how often to poll progress")
	if err := fs.Parse(args[1:]); err != nil {
		return errUsage
	}
	if c.token == "" {
		return errors.New("no token: set AGENTVAULT_TOKEN (or --token) to an operator's API token")
	}
	if err := c.setupTLS(); err != nil {
		return err
	}
	switch args[0] {
	case "status":
		return keysStatus(c, stdout)
	case "rotate":
		body := map[string]any{"target": *target}
		if *coll != "" {
			body["collection"] = *coll
		}
		var res struct {
			Target, Collection string
			KEK                *struct {
				Provider, Key string
				Version       int
			}
			Rewrapped  int
			KeyID      uint32 `json:"key_id"`
			PreviousID uint32 `json:"previous_key_id"`
		}
		if err := c.call("POST", "/v1/keys/rotate", body, &res); err != nil {
			return err
		}
		if res.Target == "kek" {
			fmt.Fprintf(stdout, "KEK %s (%s) rotated to version %d; %d keysets rewrapped under it.\n", res.KEK.Key, res.KEK.Provider, res.KEK.Version, res.Rewrapped)
			fmt.Fprintf(stdout, "Every stored keyset is now under version %d: older versions can be retired (Vault: min_decryption_version).\n", res.KEK.Version)
		} else {
			fmt.Fprintf(stdout, "Collection %s: new primary data key %d (was %d). New values use it now.\n", res.Collection, res.KeyID, res.PreviousID)
			fmt.Fprintf(stdout, "Next: agentvault keys reencrypt --collection %s, then disable and destroy key %d.\n", res.Collection, res.PreviousID)
		}
		return nil
	case "reencrypt":
		if *coll == "" {
			return errors.New("reencrypt needs --collection")
		}
		var j jobView
		if err := c.call("POST", "/v1/keys/reencrypt", map[string]any{"collection": *coll}, &j); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "Job %s: re-encrypting %d values of %s under key %d.\n", j.ID, j.Total, *coll, j.TargetKeyID)
		if *detach {
			fmt.Fprintf(stdout, "Follow it with: GET /v1/jobs/%s\n", j.ID)
			return nil
		}
		return follow(c, j.ID, *every, stdout, stderr)
	case "disable", "destroy":
		if *coll == "" || *keyID == "" {
			return fmt.Errorf("%s needs --collection and --key-id", args[0])
		}
		id, err := strconv.ParseUint(*keyID, 10, 32)
		if err != nil {
			return fmt.Errorf("--key-id: %w", err)
		}
		if err := c.call("POST", "/v1/keys/"+args[0], map[string]any{"collection": *coll, "key_id": id}, nil); err != nil {
			return err
		}
		if args[0] == "disable" {
			fmt.Fprintf(stdout, "Key %d of %s disabled: it no longer decrypts; destroy it to delete its material.\n", id, *coll)
		} else {
			fmt.Fprintf(stdout, "Key %d of %s destroyed: its material is deleted from the keyset.\n", id, *coll)
			fmt.Fprintln(stdout, "Older copies of the keyset (backups, not yet compacted database files) are wrapped by the KEK: rotate the KEK and retire its old versions to make them unreadable too.")
		}
		return nil
	}
	fmt.Fprint(stderr, keysUsage)
	return errUsage
}

type jobView struct {
	ID          string `json:"job_id"`
	Status      string
	Done, Total int64
	Skipped     int64
	Records     int64  `json:"records_scanned"`
	TargetKeyID uint32 `json:"target_key_id"`
	Error       string
	StartedAt   time.Time  `json:"started_at"`
	FinishedAt  *time.Time `json:"finished_at"`
}

// follow polls a job and draws a progress bar on stderr until it ends,
// then prints a summary.
func follow(c *client, id string, every time.Duration, stdout, stderr io.Writer) error {
	start := time.Now()
	for {
		var j jobView
		if err := c.call("GET", "/v1/jobs/"+id, nil, &j); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "\r%s", progressBar(j.Done, j.Total, 30, time.Since(start)))
		if j.Status != "running" {
			fmt.Fprintln(stderr)
			took := time.Since(j.StartedAt).Round(time.Millisecond)
			if j.FinishedAt != nil {
				took = j.FinishedAt.Sub(j.StartedAt).Round(time.Millisecond)
			}
			fmt.Fprintf(stdout, "Job %s %s: %d of %d values re-encrypted under key %d, %d records scanned, %d skipped, in %s.\n",
				j.ID, j.Status, j.Done, j.Total, j.TargetKeyID, j.Records, j.Skipped, took)
			if j.Status != "done" {
				return fmt.Errorf("job %s %s: %s", j.ID, j.Status, j.Error)
			}
			return nil
		}
		time.Sleep(every)
	}
}

func progressBar(done, total int64, width int, elapsed time.Duration) string {
	frac := 1.0
	if total > 0 {
		frac = min(float64(done)/float64(total), 1)
	}
	n := int(frac * float64(width))
	rate := float64(done) / max(elapsed.Seconds(), 0.001)
	return fmt.Sprintf("[%s%s] %5.1f%%  %d/%d values  %.0f/s", strings.Repeat("#", n), strings.Repeat(".", width-n), frac*100, done, total, rate)
}

func keysStatus(c *client, w io.Writer) error {
	var st struct {
		KEK struct {
			Provider, Key        string
			Version              int
			MinDecryptionVersion int `json:"min_decryption_version"`
			Wrapped              []struct {
				Scope      string
				KEKVersion int `json:"kek_version"`
			}
		}
		Collections []struct {
			Collection   string
			PrimaryKeyID uint32 `json:"primary_key_id"`
			DataKeys     []struct {
				KeyID   uint32 `json:"key_id"`
				Primary bool
				State   string
				Values  int64
			} `json:"data_keys"`
			IndexKeys []struct {
				KeyID uint32 `json:"key_id"`
				State string
			} `json:"index_keys"`
		}
	}
	if err := c.call("GET", "/v1/keys", nil, &st); err != nil {
		return err
	}
	fmt.Fprintf(w, "KEK: %s %s, version %d (min decryption version %d)\n", st.KEK.Provider, st.KEK.Key, st.KEK.Version, st.KEK.MinDecryptionVersion)
	behind := 0
	for _, k := range st.KEK.Wrapped {
		if k.KEKVersion != st.KEK.Version {
			behind++
		}
	}
	fmt.Fprintf(w, "  %d wrapped keysets, %d under an older KEK version\n\n", len(st.KEK.Wrapped), behind)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "COLLECTION\tDATA KEY\tPRIMARY\tSTATE\tVALUES")
	for _, c := range st.Collections {
		for _, k := range c.DataKeys {
			p := ""
			if k.Primary {
				p = "yes"
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\n", c.Collection, k.KeyID, p, k.State, k.Values)
		}
	}
	return tw.Flush()
}
