package vault

import (
	"context"
	"errors"
	"fmt"
	"github.com/google/uuid"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentvault/agentvault/keys"

	"github.com/agentvault/agentvault/storage"
)

// Config wires a Service. Build it in cmd from flags.
type Config struct {
	Store  storage.Store
	Keys   *keys.Manager
	Logger *slog.Logger
	// Registry receives the service's metrics; nil skips them.
	Registry prometheus.Registerer
	// Now is the clock; nil means time.Now. Tests move it.
	Now func() time.Time
	// MaxBatchRecords bounds one create request (default 5000).
	MaxBatchRecords int
	// CheckpointEvery is how often the audit chain's head is signed; zero
	// signs only on Close.
	CheckpointEvery time.Duration
	// ApprovalWindow is how long an approval waits for a decision (default
	// 24h); RedeemWindow how long an approved request stays redeemable
	// (default 15m); SweepEvery how often expiries are recorded (zero: only
	// when an expired approval is touched).
	ApprovalWindow time.Duration
	RedeemWindow   time.Duration
	SweepEvery     time.Duration
	// Shared says other nodes may use the same store (PostgreSQL): the
	// node polls what they change (SharedPollEvery, default 1s) and runs
	// re-encryption jobs under a lease of JobLease (default 30s) that
	// another node takes over when it lapses.
	Shared          bool
	SharedPollEvery time.Duration
	JobLease        time.Duration
	// OnApproval, if set, is called once each approval event is durable:
	// "approval.requested", "approval.approved", "approval.denied" and
	// "approval.expired", from the goroutine that made the change. It must
	// not block (queue and return). The approval holds no value and no
	// token.
	OnApproval func(event string, a Approval)
	// OnCheckpoint, if set, is called with each audit checkpoint once it
	// is stored, so it can be shipped out of the box (the webhook's
	// audit.checkpoint event). It must not block.
	OnCheckpoint func(cp Checkpoint)
	// ReencryptBatch is how many records a re-encryption job rewrites per
	// transaction (default 256); ReencryptPause how long it rests between
	// batches, to leave the writer to live traffic (default none).
	ReencryptBatch int
	ReencryptPause time.Duration
}

// Service is agentvault's domain: principals, collections, records and
// tokens, stored in Badger, encrypted with keys from package keys.
type Service struct {
	cfg   Config
	store storage.Store
	keys  *keys.Manager
	log   *slog.Logger
	now   func() time.Time

	pmu    sync.RWMutex
	byID   map[string]*Principal
	byHash map[string]*Principal

	cmu         sync.RWMutex
	collections map[string]*collection
	loadMu      sync.Mutex // serialises first loads (KMS unwraps)
	keyMu       sync.Mutex // serialises key management (rotate, rewrap, retire)

	writer *writer

	gmu     sync.RWMutex
	grants  map[string]*Grant
	byAgent map[string][]*Grant // each agent's grants, oldest first

	auditPRF atomic.Pointer[keys.IndexKey] // keyed hash of tokens in the audit log; loaded on first use
	knownPRF atomic.Pointer[keys.IndexKey] // keyed hash of known values; loaded on first use
	known    knownSet                      // the known values' hashes, from the store

	genMu   sync.Mutex
	gen     []byte // the shared-state generation the memory reflects (shared.go)
	genSeen bool   // gen was read at least once (New)
	node    string // this process's id, for job leases

	knownGen []byte                          // the known-value generation the set reflects (pollKnown; one poller)
	signKey  atomic.Pointer[keys.SigningKey] // signs audit checkpoints; loaded on first use
	cpMu     sync.Mutex

	jobs jobRunner

	// Background work (periodic tasks, re-encryption jobs) runs under bg;
	// Close cancels it and waits for every goroutine before the final
	// checkpoint.
	bg       context.Context
	stopBG   context.CancelFunc
	bgMu     sync.Mutex // guards bgClosed against bgWG.Add after Close
	bgClosed bool
	bgWG     sync.WaitGroup

	metrics serviceMetrics
}

type serviceMetrics struct {
	recordsWritten  prometheus.Counter
	tokenCollisions prometheus.Counter
	writerBatch     prometheus.Histogram
}

// knownPollEvery is how often a node sharing its store loads the known
// values again when another write changed them.
const knownPollEvery = 5 * time.Second

// Record, grant and request ids are UUIDs drawn from uuid's pool of
// random bytes (one crypto/rand read for 16 ids rather than one each):
// ids are not secrets, and a batch of a thousand records makes a
// thousand. It is set once, before any id is made.
func init() { uuid.EnableRandPool() }

// New opens the service over an open store.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Keys == nil {
		return nil, errors.New("vault: Store and Keys are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxBatchRecords <= 0 {
		cfg.MaxBatchRecords = 5000
	}
	if cfg.ApprovalWindow <= 0 {
		cfg.ApprovalWindow = 24 * time.Hour
	}
	if cfg.RedeemWindow <= 0 {
		cfg.RedeemWindow = 15 * time.Minute
	}
	if cfg.JobLease <= 0 {
		cfg.JobLease = 30 * time.Second
	}
	if cfg.Shared && cfg.SharedPollEvery <= 0 {
		cfg.SharedPollEvery = time.Second
	}
	if cfg.ReencryptBatch <= 0 {
		cfg.ReencryptBatch = 256
	}
	s := &Service{
		cfg:         cfg,
		store:       cfg.Store,
		keys:        cfg.Keys,
		log:         cfg.Logger,
		now:         func() time.Time { return cfg.Now().UTC() },
		byID:        map[string]*Principal{},
		byHash:      map[string]*Principal{},
		collections: map[string]*collection{},
		grants:      map[string]*Grant{},
		byAgent:     map[string][]*Grant{},
		node:        uuid.NewString(),
		metrics: serviceMetrics{
			recordsWritten: prometheus.NewCounter(prometheus.CounterOpts{
				Name: "agentvault_records_written_total", Help: "Records stored.",
			}),
			tokenCollisions: prometheus.NewCounter(prometheus.CounterOpts{
				Name: "agentvault_format_token_collisions_total", Help: "Format-preserving tokens drawn again because the first was taken.",
			}),
			writerBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
				Name:    "agentvault_writer_batch_requests",
				Help:    "Requests (mutations with their audit entries) the single writer put in one store transaction.",
				Buckets: prometheus.ExponentialBuckets(1, 2, 11),
			}),
		},
	}
	if cfg.Registry != nil {
		cfg.Registry.MustRegister(s.metrics.recordsWritten, s.metrics.tokenCollisions, s.metrics.writerBatch)
	}
	// Principals, grants (and the generation they reflect) are loaded
	// once here; pollShared and the writer load them again only when
	// another node changed them.
	if err := s.pollShared(); err != nil {
		return nil, fmt.Errorf("load principals and grants: %w", err)
	}
	if err := initKeyCounts(s.store); err != nil {
		return nil, fmt.Errorf("key usage counters: %w", err)
	}
	if err := initApprovalDue(s.store); err != nil {
		return nil, fmt.Errorf("approval expiry index: %w", err)
	}
	if err := s.known.load(s.store); err != nil {
		return nil, fmt.Errorf("known values: %w", err)
	}
	w, err := newWriter(s.store)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	w.sync, w.checkActor, w.batchSize = s.syncShared, s.checkActor, s.metrics.writerBatch
	w.exclusive = !cfg.Shared
	s.writer = w
	s.bg, s.stopBG = context.WithCancel(context.Background())
	s.jobs.active = map[string]string{}
	if err := s.resumeJobs(); err != nil {
		s.Close()
		return nil, fmt.Errorf("resume jobs: %w", err)
	}
	if cfg.CheckpointEvery > 0 {
		s.every(cfg.CheckpointEvery, "audit checkpoint failed", func(ctx context.Context) error {
			_, err := s.Checkpoint(ctx)
			return err
		})
	}
	if cfg.SharedPollEvery > 0 {
		s.every(cfg.SharedPollEvery, "shared state poll", func(context.Context) error { return s.pollShared() })
	}
	if cfg.Shared {
		s.every(cfg.JobLease/3, "take over re-encryption jobs", func(context.Context) error { return s.resumeJobs() })
		s.every(knownPollEvery, "known values poll", func(context.Context) error { return s.pollKnown() })
	}
	if cfg.SweepEvery > 0 {
		s.every(cfg.SweepEvery, "expire approvals", func(ctx context.Context) error {
			_, err := s.ExpireApprovals(ctx)
			return err
		})
	}
	return s, nil
}

// Close signs a final checkpoint over the audit chain, then stops the
// single writer; later writes fail. Close the store after.
func (s *Service) Close() {
	// Jobs stop between batches; their progress is already stored.
	s.bgMu.Lock()
	s.bgClosed = true
	s.bgMu.Unlock()
	s.stopBG()
	s.bgWG.Wait()
	if s.writer.isOpen() {
		if _, err := s.Checkpoint(context.Background()); err != nil {
			s.log.Error("final audit checkpoint failed", "err", err)
		}
	}
	s.writer.close()
}

// Ready reports whether storage answers and the KMS is reachable.
func (s *Service) Ready(ctx context.Context) error {
	if err := s.store.Check(); err != nil {
		return err
	}
	return s.keys.KEK().Check(ctx)
}

// goBackground runs fn on its own goroutine with the background context;
// Close cancels that context and waits for fn to return. After Close it
// runs nothing and reports false.
func (s *Service) goBackground(fn func(ctx context.Context)) bool {
	s.bgMu.Lock()
	defer s.bgMu.Unlock()
	if s.bgClosed {
		return false
	}
	s.bgWG.Add(1)
	go func() {
		defer s.bgWG.Done()
		fn(s.bg)
	}()
	return true
}

// every runs task each interval until Close, logging its failures.
func (s *Service) every(interval time.Duration, failMsg string, task func(ctx context.Context) error) {
	s.goBackground(func(ctx context.Context) {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := task(ctx); err != nil && ctx.Err() == nil {
					s.log.Error(failMsg, "err", err)
				}
			}
		}
	})
}
