package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/agentvault/agentvault/httpapi"
	"github.com/agentvault/agentvault/keys"
	"github.com/agentvault/agentvault/notify"
	"github.com/agentvault/agentvault/storage"
	"github.com/agentvault/agentvault/storage/badgerstore"
	"github.com/agentvault/agentvault/storage/pgstore"
	"github.com/agentvault/agentvault/vault"
)

type serveFlags struct {
	listen  string
	dataDir string
	kmsFlags
	maxBodyBytes    int64
	maxBatch        int
	logLevel        string
	logFormat       string
	shutdownTimeout time.Duration
	cpuProfile      string
	allocProfile    string
	checkpointEvery time.Duration
	approvalWindow  time.Duration
	redeemWindow    time.Duration
	webhookURL      string
	webhookSecret   string
	publicURL       string
	rotateDEKEvery  time.Duration
	rotateKEKEvery  time.Duration
	reencryptBatch  int
	reencryptPause  time.Duration
	tls             tlsFiles
	storageReserve  int64
	memtableSize    int64
	store           string
	postgresURL     string
	jobLease        time.Duration
}

// parseServeFlags reads serve's flags and checks the ones that depend on
// each other.
func parseServeFlags(args []string) (serveFlags, error) {
	var f serveFlags
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.StringVar(&f.listen, "listen", "127.0.0.1:8080", "address to listen on")
	fs.StringVar(&f.dataDir, "data-dir", "agentvault-data", "directory for the database (and the development KEK with --kms local)")
	f.kmsFlags.register(fs)
	fs.Int64Var(&f.maxBodyBytes, "max-body-bytes", httpapi.DefaultMaxBodyBytes, "largest request body accepted (413 above)")
	fs.IntVar(&f.maxBatch, "max-batch-records", 5000, "most records in one create request")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "text", "text or json")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 30*time.Second, "how long in-flight requests get to finish on SIGTERM")
	fs.DurationVar(&f.checkpointEvery, "audit-checkpoint-every", time.Minute, "how often the audit chain's head is signed (and at every clean shutdown)")
	fs.DurationVar(&f.approvalWindow, "approval-window", 24*time.Hour, "how long an approval waits for a decision before it expires")
	fs.DurationVar(&f.redeemWindow, "redeem-window", 15*time.Minute, "how long an approved request stays redeemable (once)")
	fs.StringVar(&f.webhookURL, "approval-webhook", "", "URL that receives a signed JSON POST for each approval event (requested, approved, denied, expired) (secret from --approval-webhook-secret-file or AGENTVAULT_WEBHOOK_SECRET)")
	fs.StringVar(&f.publicURL, "public-url", "", "the URL people reach this server at (for example https://vault.example.com), for console links in webhook events")
	fs.StringVar(&f.webhookSecret, "approval-webhook-secret-file", "", "file holding the webhook's HMAC secret (at least 16 bytes)")
	fs.DurationVar(&f.rotateDEKEvery, "rotate-dek-every", 0, "rotate every collection's data key on this schedule, then re-encrypt it in the background (0: never)")
	fs.DurationVar(&f.rotateKEKEvery, "rotate-kek-every", 0, "rotate the KEK on this schedule and rewrap every keyset (0: never)")
	fs.IntVar(&f.reencryptBatch, "reencrypt-batch", 256, "records per re-encryption transaction")
	fs.DurationVar(&f.reencryptPause, "reencrypt-pause", 0, "rest between re-encryption batches, to leave more of the writer to live traffic")
	fs.StringVar(&f.tls.cert, "tls-cert-file", "", "serve HTTPS with this PEM certificate (chain); re-read on SIGHUP")
	fs.StringVar(&f.tls.key, "tls-key-file", "", "the PEM private key of --tls-cert-file; re-read on SIGHUP")
	fs.StringVar(&f.tls.clientCA, "tls-client-ca-file", "", "require client certificates signed by these PEM CAs (mutual TLS, on top of API tokens); re-read on SIGHUP")
	fs.Int64Var(&f.storageReserve, "storage-reserve", 1<<30, "free bytes writes leave on the data directory's filesystem: below it writes answer 503 storage_full (reads and detokenizes go on to a quarter of it); at least 3x --memtable-size; 0 disables the check")
	fs.Int64Var(&f.memtableSize, "memtable-size", 64<<20, "Badger's memtable size in bytes (tuning; the storage reserve must cover three)")
	fs.StringVar(&f.cpuProfile, "cpu-profile", "", "write a CPU profile to this file until shutdown (for performance work)")
	fs.StringVar(&f.allocProfile, "alloc-profile", "", "write a profile of the memory allocated since start to this file at shutdown (for performance work)")
	fs.StringVar(&f.store, "store", "badger", "where the vault keeps its data: badger (embedded, in --data-dir) or postgres (--postgres-url; several nodes may share one database)")
	fs.DurationVar(&f.jobLease, "job-lease", 30*time.Second, "with --store postgres: how long a node's hold on a re-encryption job lasts without renewal; another node takes the job over after it lapses")
	fs.StringVar(&f.postgresURL, "postgres-url", "", "PostgreSQL connection URL for --store postgres (default AGENTVAULT_POSTGRES_URL; put the password in PGPASSWORD or ~/.pgpass rather than the URL)")
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	if err := f.tls.check(); err != nil {
		return f, err
	}
	if f.memtableSize < 1<<20 {
		return f, errors.New("--memtable-size must be at least 1 MiB")
	}
	switch f.store {
	case "badger":
		if f.postgresURL != "" {
			return f, errors.New("--postgres-url needs --store postgres")
		}
	case "postgres":
		if f.postgresURL == "" {
			f.postgresURL = os.Getenv("AGENTVAULT_POSTGRES_URL")
		}
		if f.postgresURL == "" {
			return f, errors.New("--store postgres needs --postgres-url or AGENTVAULT_POSTGRES_URL")
		}
	default:
		return f, fmt.Errorf("--store %q: want badger or postgres", f.store)
	}
	if f.storageReserve != 0 && f.storageReserve < 3*f.memtableSize {
		return f, fmt.Errorf("--storage-reserve must be 0 or at least 3x --memtable-size (%d bytes): Badger needs that room to flush and compact", 3*f.memtableSize)
	}
	if f.publicURL != "" {
		if u, err := url.Parse(f.publicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return f, fmt.Errorf("--public-url %q: want an absolute http(s) URL", f.publicURL)
		}
	}
	return f, nil
}

// newRegistry is the server's Prometheus registry: Go and process
// collectors, and with Vault as the KEK, the Vault token's remaining TTL.
func newRegistry(kek keys.KEK) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if vk, ok := kek.(*keys.VaultKEK); ok {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "agentvault_vault_token_ttl_seconds",
			Help: "Time the Vault token has left (+Inf: it does not expire); it is renewed, or replaced by a new login, before it runs out.",
		}, func() float64 {
			ttl, ok := vk.TokenTTL()
			if !ok {
				return math.Inf(1)
			}
			return ttl.Seconds()
		}))
	}
	return reg
}

// runHTTP serves the API until ctx ends, then gives in-flight requests
// --shutdown-timeout to finish.
func runHTTP(ctx context.Context, f serveFlags, api http.Handler, certs *tlsReloader, log *slog.Logger) error {
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           api,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	if certs != nil {
		srv.TLSConfig = certs.serverConfig()
		srv.Handler = strictTransport(api)
		go func() { errc <- srv.ServeTLS(ln, "", "") }()
	} else {
		go func() { errc <- srv.Serve(ln) }()
	}
	log.Info("listening", "addr", ln.Addr().String(), "tls", certs != nil, "kms", f.kms, "data_dir", f.dataDir)
	if certs == nil && !isLoopback(ln.Addr()) {
		log.Warn("serving plain HTTP on a non-loopback address: API tokens and revealed values cross the network in the clear. " +
			"Use --tls-cert-file and --tls-key-file, or keep agentvault on loopback behind a TLS-terminating proxy.")
	}

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: finishing in-flight requests")
	sctx, cancel := context.WithTimeout(context.Background(), f.shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		// Requests still running (a long backup, say) are cut off so the
		// database can be synced and closed now, not when they end.
		log.Warn("shutdown timeout: closing the connections still open", "err", err)
		srv.Close()
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	log.Info("stopped")
	return nil
}

// webhookHooks returns what the vault calls on approval events and audit
// checkpoints when --approval-webhook is set (nil hooks otherwise), and a
// close that drains the webhook's queue.
func webhookHooks(f serveFlags, log *slog.Logger, reg *prometheus.Registry) (func(string, vault.Approval), func(vault.Checkpoint), func(), error) {
	if f.webhookURL == "" {
		return nil, nil, func() {}, nil
	}
	wh, err := openWebhook(f, log, reg)
	if err != nil {
		return nil, nil, nil, err
	}
	base := strings.TrimRight(f.publicURL, "/")
	onApproval := func(event string, a vault.Approval) {
		ev := approvalEvent{Approval: a}
		if base != "" {
			ev.ConsoleURL = base + "/ui/#approval=" + url.PathEscape(a.ID)
		}
		wh.Send(event, ev)
	}
	// Each audit checkpoint leaves the box as it is made, so an auditor
	// holds signed heads the database cannot take back.
	onCheckpoint := func(cp vault.Checkpoint) { wh.Send("audit.checkpoint", cp) }
	log.Info("approval webhook on", "url", redactURL(f.webhookURL))
	return onApproval, onCheckpoint, wh.Close, nil
}

func serve(args []string) error {
	f, err := parseServeFlags(args)
	if err != nil {
		return err
	}
	if f.cpuProfile != "" {
		pf, err := os.Create(f.cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(pf); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if f.allocProfile != "" {
		defer func() {
			if pf, err := os.Create(f.allocProfile); err == nil {
				pprof.Lookup("allocs").WriteTo(pf, 0)
				pf.Close()
			}
		}()
	}
	log, err := newLogger(f.logLevel, f.logFormat)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// SIGHUP re-reads the TLS files; without TLS it is logged and ignored
	// (its default would end the process).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer func() { signal.Stop(hup); close(hup) }()

	if err := os.MkdirAll(f.dataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	f.devKEK = devKEKPath(f)
	_, statErr := os.Stat(f.devKEK)
	kekCreated := f.kms == "local" && errors.Is(statErr, os.ErrNotExist)
	kek, err := f.kmsFlags.open(ctx, log, true)
	if err != nil {
		return err
	}
	reg := newRegistry(kek)
	if vk, ok := kek.(*keys.VaultKEK); ok {
		defer vk.Close()
	}
	store, err := openStore(ctx, f, log, reg)
	if err != nil {
		return err
	}
	defer func() {
		if err := store.Close(); err != nil {
			log.Error("close store", "err", err)
		}
	}()
	onApproval, onCheckpoint, closeWebhook, err := webhookHooks(f, log, reg)
	if err != nil {
		return err
	}
	defer closeWebhook()
	svc, err := vault.New(vault.Config{
		Store: store, Keys: keys.NewManager(kek), Logger: log, Registry: reg, MaxBatchRecords: f.maxBatch,
		CheckpointEvery: f.checkpointEvery,
		ApprovalWindow:  f.approvalWindow,
		RedeemWindow:    f.redeemWindow,
		SweepEvery:      30 * time.Second,
		OnApproval:      onApproval,
		OnCheckpoint:    onCheckpoint,
		ReencryptBatch:  f.reencryptBatch,
		ReencryptPause:  f.reencryptPause,
		Shared:          f.store == "postgres",
		JobLease:        f.jobLease,
	})
	if err != nil {
		return err
	}
	defer svc.Close() // runs before the store closes
	switch refused, err := svc.CheckKEK(ctx); {
	case errors.Is(err, vault.ErrWrongKEK):
		if kekCreated {
			// Do not leave a fresh KEK beside data it cannot read.
			os.Remove(devKEKPath(f))
		}
		return fmt.Errorf("%w in %s: this database's keysets were wrapped by another KEK. "+
			"Restored from a backup? With the development KEK, copy dev-kek.json from the old data directory; "+
			"with Vault, point --vault-key/--vault-mount at the Transit key the backup names (agentvault backup --check FILE)", err, f.dataDir)
	case errors.Is(err, keys.ErrKMSUnavailable):
		log.Warn("KEK provider unreachable at start: keysets unwrap once it answers (see /readyz)", "err", err)
	case err != nil:
		return err
	case len(refused) > 0:
		log.Error("stored keysets that do not unwrap under the KEK: was a KEK version retired while they still used it?", "scopes", refused)
	}
	generated, err := svc.EnsureBootstrapAdmin(ctx, os.Getenv("AGENTVAULT_ADMIN_TOKEN"))
	if err != nil {
		return err
	}
	if generated != "" {
		// Straight to the terminal, not the log pipeline: it is a secret.
		fmt.Fprintf(os.Stderr, "\n  bootstrap admin token (shown once, store it now):\n\n    %s\n\n", generated)
	}

	if f.rotateDEKEvery > 0 || f.rotateKEKEvery > 0 {
		sctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); scheduleRotations(sctx, svc, log, f.rotateKEKEvery, f.rotateDEKEvery) }()
		defer func() { cancel(); <-done }()
	}

	var certs *tlsReloader
	if f.tls.enabled() {
		if certs, err = newTLSReloader(f.tls, log, reg); err != nil {
			return err
		}
	}
	go func() {
		for range hup {
			if certs == nil {
				log.Info("SIGHUP: no TLS files to reload")
			} else if err := certs.reload(); err != nil {
				log.Error("SIGHUP: TLS reload failed; still serving the previous certificate", "err", err)
			}
		}
	}()

	api := httpapi.New(httpapi.Config{Service: svc, Logger: log, Registry: reg, MaxBodyBytes: f.maxBodyBytes})
	return runHTTP(ctx, f, api, certs, log)
}

// openStore opens the vault's store: Badger in the data directory, or the
// PostgreSQL database (whose URL is never logged: it may hold a password).
func openStore(ctx context.Context, f serveFlags, log *slog.Logger, reg *prometheus.Registry) (storage.Store, error) {
	if f.store == "postgres" {
		// A database that is not there yet (starting, failing over) is
		// waited for, with backoff, so an orchestrator does not
		// restart-loop the node; one that refuses it (credentials, no such
		// database) fails the start.
		wait := time.Second
		for {
			s, err := pgstore.Open(ctx, f.postgresURL, pgstore.Options{Logger: log.With("component", "postgres")})
			if err == nil {
				log.Info("store postgres: connected, schema current")
				return s, nil
			}
			if !errors.Is(err, storage.ErrUnavailable) || pgstore.Refused(err) {
				return nil, fmt.Errorf("store postgres: %w", err)
			}
			log.Warn("store postgres: database unreachable at start; retrying", "err", err, "in", wait)
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("store postgres: %w", err)
			case <-time.After(wait):
			}
			wait = min(2*wait, time.Minute)
		}
	}
	return badgerstore.Open(filepath.Join(f.dataDir, "db"), badgerstore.Options{Logger: log, Registry: reg, Reserve: f.storageReserve, MemTableSize: f.memtableSize})
}

func devKEKPath(f serveFlags) string { return filepath.Join(f.dataDir, "dev-kek.json") }

func newLogger(level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format must be text or json, not %q", format)
}

// openWebhook starts the approval webhook. The secret comes from a file or
// the environment, never from a flag (flags show in the process list).
func openWebhook(f serveFlags, log *slog.Logger, reg prometheus.Registerer) (*notify.Webhook, error) {
	secret := []byte(os.Getenv("AGENTVAULT_WEBHOOK_SECRET"))
	if f.webhookSecret != "" {
		b, err := os.ReadFile(f.webhookSecret)
		if err != nil {
			return nil, fmt.Errorf("--approval-webhook-secret-file: %w", err)
		}
		secret = bytes.TrimSpace(b)
	}
	if len(secret) == 0 {
		return nil, errors.New("--approval-webhook needs a secret: --approval-webhook-secret-file or AGENTVAULT_WEBHOOK_SECRET")
	}
	wh, err := notify.NewWebhook(notify.WebhookConfig{URL: f.webhookURL, Secret: secret, Logger: log, Registry: reg})
	if err != nil {
		return nil, fmt.Errorf("--approval-webhook: %w", err)
	}
	return wh, nil
}

// redactURL keeps only a URL's scheme and host, for logs.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable)"
	}
	// Scheme and host only: user-info, paths (Slack-style webhook URLs)
	// and queries hold secrets.
	return u.Scheme + "://" + u.Host
}

// scheduleRotations rotates keys on the configured schedules until ctx
// ends. Each rotation is audited like a manual one, with request id
// "scheduled-rotation"; a failed one is logged and tried at the next tick.
func scheduleRotations(ctx context.Context, svc *vault.Service, log *slog.Logger, kekEvery, dekEvery time.Duration) {
	tick := func(d time.Duration) <-chan time.Time {
		if d <= 0 {
			return nil // never fires
		}
		t := time.NewTicker(d)
		context.AfterFunc(ctx, t.Stop)
		return t.C
	}
	kekC, dekC := tick(kekEvery), tick(dekEvery)
	meta := vault.RequestMeta{RequestID: "scheduled-rotation"}
	for {
		select {
		case <-ctx.Done():
			return
		case <-kekC:
			if res, err := svc.RotateKEK(ctx, meta); err != nil {
				log.Error("scheduled KEK rotation failed", "err", err)
			} else {
				log.Info("scheduled KEK rotation", "version", res.KEK.Version, "rewrapped", res.Rewrapped)
			}
		case <-dekC:
			cols, err := svc.ListCollections(ctx)
			if err != nil {
				log.Error("scheduled DEK rotation: list collections", "err", err)
				continue
			}
			for _, c := range cols {
				if _, err := svc.RotateDEK(ctx, meta, c.Name); err != nil {
					log.Error("scheduled DEK rotation failed", "collection", c.Name, "err", err)
					continue
				}
				if _, err := svc.StartReencrypt(ctx, meta, c.Name); err != nil && !errors.Is(err, vault.ErrConflict) {
					log.Error("scheduled re-encryption failed to start", "collection", c.Name, "err", err)
				}
			}
		}
	}
}

// approvalEvent is the webhook body's data for a new approval: the
// approval (no values, no tokens) and, with --public-url, a link that opens
// it in the console.
type approvalEvent struct {
	vault.Approval
	ConsoleURL string `json:"console_url,omitempty"`
}
