// Package badgerstore is the vault's embedded store: Badger on local disk,
// made durable by a write-ahead log of its own with group commit (see
// wal.go), with a free-space reserve, behind the storage interfaces.
package badgerstore

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentvault/agentvault/storage"
)

// Store is agentvault's Badger database made durable by its own
// write-ahead log: a read-write transaction's record is written and
// synced before the transaction commits to Badger, so what a reader sees
// is durable, and Badger never holds a transaction the log does not
// (which replay relies on). Read-write transactions run one at a time
// (wmu), each with its own fdatasync; the vault's single writer puts
// many requests into one transaction (group commit).
type Store struct {
	db   *badger.DB
	done chan struct{}

	walDir string
	wal    *walWriter // under wmu
	// walErr, once set, fails every write: a log that failed to write or
	// sync cannot say what is durable (PostgreSQL stops for the same
	// reason). A restart replays what is.
	walErr atomic.Pointer[error]
	// body is the open write transaction's log record (under wmu).
	body []byte

	// A checkpoint (one at a time, in its own goroutine) makes Badger's
	// files hold every transaction in the segments before ckBefore, then
	// deletes those segments. ckWake asks for one.
	ckMu        sync.Mutex
	ckBefore    atomic.Uint64
	ckWake      chan struct{}
	ckDone      chan struct{}
	checkpoints prometheus.Counter
	ckFailures  prometheus.Counter
	// beforeCheckpoint, when set by a test, runs after a checkpoint is
	// decided and before Badger is synced.
	beforeCheckpoint atomic.Pointer[func()]

	closeMu sync.RWMutex
	closed  bool

	// wmu runs read-write transactions one at a time, from their start to
	// their commit (not the fsync after it, which they share): what makes
	// a read-modify-write safe without conflict detection.
	wmu sync.Mutex

	syncTime prometheus.Histogram

	// beforeSync and afterSync, when set by a test, run around each log
	// fdatasync, before the transaction commits: fault injection (a slow
	// disk) and inspection, never set in production.
	beforeSync atomic.Pointer[func()]
	afterSync  atomic.Pointer[func()]

	dir          string
	reserve      atomic.Int64
	fullRefusals prometheus.Counter
}

// Options tune the store; the zero value is fine.
type Options struct {
	Logger   *slog.Logger
	Registry prometheus.Registerer
	// ReadOnly opens the database without taking writes (offline tools).
	ReadOnly bool
	// MemTableSize is Badger's memtable (and write-ahead log file) size;
	// 0 keeps Badger's 64 MiB. Tests make it small to switch memtables.
	MemTableSize int64
	// Reserve is the free space writes leave on the data directory's
	// filesystem (see CheckSpace); 0 checks nothing. It must cover
	// Badger's own work: at least three memtables.
	Reserve int64
	// SegmentSize is the write-ahead log's segment size; 0 chooses (see
	// segmentSize). Tests make it small to switch segments.
	SegmentSize int64
}

// walDirName is the write-ahead log's directory, inside the database's.
const walDirName = "wal"

// Open opens (or creates) the Badger database in dir and replays its
// write-ahead log. A read-only open of a database whose log holds
// transactions (the server stopped without closing it) first opens it
// for writing to replay them: what it then reads is everything that was
// acknowledged.
func Open(dir string, o Options) (*Store, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.ReadOnly {
		pending, err := walHasRecords(filepath.Join(dir, walDirName))
		if err != nil {
			return nil, fmt.Errorf("open badger in %s: %w", dir, err)
		}
		if pending {
			o.Logger.Info("the database was not closed cleanly; replaying its write-ahead log before opening it read-only", "dir", dir)
			rw := o
			rw.ReadOnly, rw.Registry = false, nil
			s, err := Open(dir, rw)
			if err != nil {
				return nil, fmt.Errorf("replay the write-ahead log of %s (a read-only open needs it replayed): %w", dir, err)
			}
			if err := s.Close(); err != nil {
				return nil, err
			}
		}
	}
	opts := badger.DefaultOptions(dir).
		WithSyncWrites(false).
		WithNumVersionsToKeep(1).
		// Read-write transactions run one at a time (wmu), so Badger's
		// conflict tracking would only cost.
		WithDetectConflicts(false).
		WithReadOnly(o.ReadOnly).
		WithLogger(badgerLogger{o.Logger.With("component", "badger")}).
		WithMetricsEnabled(false).
		// Stored values are ciphertexts and random tokens: compressing
		// them costs CPU at every flush and saves nothing.
		WithCompression(options.None)
	if o.MemTableSize > 0 {
		// Badger caps a batch at 15% of the memtable, and values above the
		// value threshold must fit one.
		opts = opts.WithMemTableSize(o.MemTableSize).WithValueThreshold(min(opts.ValueThreshold, o.MemTableSize/10))
	}
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("open badger in %s: %w", dir, err)
	}
	s := &Store{
		db:     db,
		dir:    dir,
		walDir: filepath.Join(dir, walDirName),
		ckWake: make(chan struct{}, 1),
		ckDone: make(chan struct{}),
		checkpoints: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agentvault_store_checkpoints_total",
			Help: "Checkpoints: Badger's files synced and the write-ahead log segments they cover deleted.",
		}),
		ckFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agentvault_store_checkpoint_failures_total",
			Help: "Checkpoints that failed; the log keeps its segments until one succeeds.",
		}),
		fullRefusals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agentvault_storage_full_refusals_total",
			Help: "Writes refused because the data directory's filesystem was down to its reserve.",
		}),
		done: make(chan struct{}),
		syncTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "agentvault_store_sync_seconds",
			Help:    "Time one group-commit write and fdatasync of the write-ahead log took.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
	}
	s.reserve.Store(o.Reserve)
	if !o.ReadOnly {
		if err := s.recover(o.Logger, cmp.Or(o.SegmentSize, segmentSize(opts.MemTableSize))); err != nil {
			db.Close()
			return nil, fmt.Errorf("open badger in %s: %w", dir, err)
		}
	}
	if o.Registry != nil {
		o.Registry.MustRegister(s.syncTime, s.fullRefusals, s.checkpoints, s.ckFailures, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "agentvault_storage_free_bytes",
			Help: "Free space on the data directory's filesystem; writes stop at agentvault_storage_reserve_bytes.",
		}, func() float64 {
			free, _ := freeBytes(dir)
			return float64(free)
		}), prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "agentvault_storage_reserve_bytes",
			Help: "Free space writes leave on the data directory's filesystem (0: not checked).",
		}, func() float64 { return float64(s.reserve.Load()) }))
	}
	if o.ReadOnly {
		close(s.ckDone)
		return s, nil
	}
	go s.checkpointLoop(o.Logger)
	return s, nil
}

// recover replays the write-ahead log into Badger, makes Badger's files
// hold it (a checkpoint), deletes its segments and starts a new one.
func (s *Store) recover(log *slog.Logger, segSize int64) error {
	if err := os.MkdirAll(s.walDir, 0o700); err != nil {
		return err
	}
	ids, err := listSegments(s.walDir)
	if err != nil {
		return err
	}
	var last uint64
	if len(ids) > 0 {
		last = ids[len(ids)-1]
		wb := s.db.NewWriteBatch()
		defer wb.Cancel()
		records, torn, err := readSegments(s.walDir, func(body []byte) error {
			return eachOp(body, func(kind byte, key, value []byte) error {
				if kind == opDelete {
					return wb.Delete(key)
				}
				return wb.Set(key, value)
			})
		})
		if err == nil {
			err = wb.Flush()
		}
		if err != nil {
			return fmt.Errorf("replay the write-ahead log: %w", err)
		}
		if torn != "" {
			log.Warn("the write-ahead log ends in a torn record, where a crash stopped a write that was never acknowledged; replayed what came before", "at", torn)
		}
		if err := s.checkpoint(last + 1); err != nil {
			return fmt.Errorf("after replaying the write-ahead log: %w", err)
		}
		log.Info("replayed the write-ahead log", "transactions", records, "segments", len(ids))
	}
	s.wal, err = openWAL(s.walDir, segSize, last)
	return err
}

// logDurably writes a transaction's record to the log and syncs it
// (under wmu), and asks for a checkpoint when a segment filled. A
// failure sticks.
func (s *Store) logDurably(body []byte) error {
	if err := s.failed(); err != nil {
		return err
	}
	if hook := s.beforeSync.Load(); hook != nil {
		(*hook)()
	}
	start := time.Now()
	switched, err := s.wal.append(body)
	s.syncTime.Observe(time.Since(start).Seconds())
	if hook := s.afterSync.Load(); hook != nil {
		(*hook)()
	}
	if switched {
		s.ckBefore.Store(s.wal.segID)
		select {
		case s.ckWake <- struct{}{}:
		default:
		}
	}
	// Nothing of the record was written (a full disk while zeroing or
	// starting a segment, a record too big): this write fails, the log
	// takes the next.
	if nw := (notWritten{}); errors.As(err, &nw) {
		if errors.Is(err, storage.ErrTooBig) {
			return err
		}
		return fmt.Errorf("%w: %v", storage.ErrUnavailable, err)
	}
	if err != nil {
		s.fail(err)
		return s.failed()
	}
	return nil
}

// fail makes err the store's sticky failure.
func (s *Store) fail(err error) {
	err = fmt.Errorf("%w: %v", storage.ErrUnavailable, err)
	s.walErr.CompareAndSwap(nil, &err)
}

// failed is the log's sticky failure, or nil.
func (s *Store) failed() error {
	if p := s.walErr.Load(); p != nil {
		return *p
	}
	return nil
}

// checkpointLoop runs the checkpoints the sync loop asks for, until
// Close.
func (s *Store) checkpointLoop(log *slog.Logger) {
	defer close(s.ckDone)
	for {
		select {
		case <-s.done:
			return
		case <-s.ckWake:
			if err := s.checkpoint(s.ckBefore.Load()); err != nil {
				s.ckFailures.Inc()
				log.Error("write-ahead log checkpoint failed; its segments are kept", "err", err)
			}
		}
	}
}

// checkpoint makes Badger's files hold every transaction logged in the
// segments before the segment id before, then deletes those segments.
// Each of them was committed to Badger before the segment before was
// begun, and so before this call: DB.Sync writes the current memtable's
// log and value log, syncRetiredLogs the set-aside ones.
func (s *Store) checkpoint(before uint64) error {
	s.ckMu.Lock()
	defer s.ckMu.Unlock()
	if hook := s.beforeCheckpoint.Load(); hook != nil {
		(*hook)()
	}
	if err := s.db.Sync(); err != nil {
		return err
	}
	if err := s.syncRetiredLogs(); err != nil {
		return err
	}
	if err := removeSegments(s.walDir, before); err != nil {
		return err
	}
	s.checkpoints.Inc()
	return nil
}

// syncRetiredLogs makes up for what Badger's DB.Sync leaves out. DB.Sync
// syncs the current memtable's write-ahead log and the current value log;
// a transaction that committed into a memtable that filled up (and was
// set aside for flushing) lives only in that older log until the flush
// writes it to a table (TestCheckpointSyncsSetAsideMemtables). It runs
// after DB.Sync: a memtable set aside before the sync began has its log
// here; one set aside after was the current one when DB.Sync synced it.
// A log flushed meanwhile is gone, its data in a synced table. The value
// log rotates at 1 GiB, so the one before the newest is synced too.
func (s *Store) syncRetiredLogs() error {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return err
	}
	var mems, vlogs []string
	for _, e := range ents {
		switch filepath.Ext(e.Name()) {
		case ".mem":
			mems = append(mems, e.Name())
		case ".vlog":
			vlogs = append(vlogs, e.Name())
		}
	}
	// Names are zero-padded file ids, in order: the last is the current.
	retired := vlogs[:0:0]
	if len(mems) > 1 {
		retired = append(retired, mems[:len(mems)-1]...)
	}
	if len(vlogs) > 1 {
		retired = append(retired, vlogs[len(vlogs)-2])
	}
	for _, name := range retired {
		if err := fsync(filepath.Join(s.dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("sync %s: %w", name, err)
		}
	}
	return nil
}

// fsync syncs a file or a directory (its entries).
func fsync(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// WaitDurable returns once everything committed before the call is on
// disk: at once, since a transaction commits only after its log record
// is synced. It reports the log's failure, if any.
func (s *Store) WaitDurable() error {
	return s.failed()
}

// Update runs fn in a read-write transaction, commits it, and returns once
// it is durable. fn runs once: transactions take the write lock in turn,
// so none can conflict. small marks a write the audit log needs (a
// checkpoint): it goes on into the storage reserve, as reveals do.
func (s *Store) Update(ctx context.Context, small bool, fn func(txn storage.Txn) error) error {
	if err := s.CheckSpace(small); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	err := s.run(fn)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, badger.ErrTxnTooBig), errors.Is(err, storage.ErrTooBig):
		return fmt.Errorf("%w: %v", storage.ErrTooBig, err)
	case isStorageErr(err):
		return fmt.Errorf("%w: %v", storage.ErrUnavailable, err)
	default:
		return err
	}
}

// run runs fn in a logged transaction under the write lock and commits
// it (Update, UpdateRaw).
func (s *Store) run(fn func(txn storage.Txn) error) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	txn := s.newLoggedTxn()
	defer txn.t.Discard()
	if err := fn(txn); err != nil {
		return err
	}
	return s.commitLogged(txn)
}

// View runs fn in a read-only transaction.
func (s *Store) View(fn func(txn storage.Txn) error) error {
	err := s.db.View(func(txn *badger.Txn) error { return fn(badgerTxn{txn}) })
	if isStorageErr(err) {
		return fmt.Errorf("%w: %v", storage.ErrUnavailable, err)
	}
	return err
}

func isStorageErr(err error) bool {
	return errors.Is(err, badger.ErrDBClosed) || errors.Is(err, badger.ErrBlockedWrites) ||
		errors.Is(err, badger.ErrNoRewrite) || errors.Is(err, badger.ErrRejected) || errors.Is(err, badger.ErrTruncateNeeded)
}

// Check reports whether the store answers a read and has room for
// writes.
func (s *Store) Check() error {
	if s.db.IsClosed() {
		return fmt.Errorf("%w: closed", storage.ErrUnavailable)
	}
	if err := s.failed(); err != nil {
		return err
	}
	if err := s.CheckSpace(false); err != nil {
		return err
	}
	return s.View(func(txn storage.Txn) error {
		_, err := txn.Get([]byte("meta/format"))
		if errors.Is(err, storage.ErrNotFound) {
			return nil
		}
		return err
	})
}

// Close makes Badger's files hold everything (a checkpoint that deletes
// every log segment) and closes Badger.
func (s *Store) Close() error {
	s.closeMu.Lock()
	if s.closed {
		s.closeMu.Unlock()
		return nil
	}
	s.closed = true
	s.closeMu.Unlock()
	close(s.done)
	<-s.ckDone
	if s.wal == nil { // read-only
		return s.db.Close()
	}
	s.wmu.Lock()
	err := s.checkpoint(s.wal.segID + 1)
	s.wal.close()
	s.wmu.Unlock()
	if cerr := s.db.Close(); err == nil {
		err = cerr
	}
	return err
}

// NewWriteTxn starts a read-write transaction for the single writer;
// Commit returns once it is durable.
// It holds the store's write lock until it is committed or discarded.
func (s *Store) NewWriteTxn() storage.WriteTxn {
	s.wmu.Lock()
	return &writeTxn{loggedTxn: s.newLoggedTxn(), s: s}
}

// writeTxn is a read-write transaction holding the store's write lock.
type writeTxn struct {
	loggedTxn
	s *Store
}

func (w *writeTxn) release() {
	if w.s != nil {
		w.s.wmu.Unlock()
		w.s = nil
	}
}

func (w *writeTxn) Commit() error {
	defer w.release()
	return w.s.commitLogged(w.loggedTxn)
}

func (w *writeTxn) Discard() {
	w.t.Discard()
	w.release()
}

// loggedTxn is a read-write transaction that writes what it sets and
// deletes into its log record too (the store's body, under wmu).
type loggedTxn struct {
	badgerTxn
	body *[]byte
}

func (s *Store) newLoggedTxn() loggedTxn {
	s.body = s.body[:0]
	return loggedTxn{badgerTxn: badgerTxn{s.db.NewTransaction(true)}, body: &s.body}
}

func (t loggedTxn) Set(key, value []byte) error {
	if err := badgerErr(t.t.Set(key, value)); err != nil {
		return err
	}
	*t.body = appendOp(*t.body, opSet, key, value)
	return nil
}

func (t loggedTxn) Delete(key []byte) error {
	if err := badgerErr(t.t.Delete(key)); err != nil {
		return err
	}
	*t.body = appendOp(*t.body, opDelete, key, nil)
	return nil
}

// commitLogged writes a logged transaction's record to the log, syncs
// it, and then commits the transaction to Badger (under wmu: records are
// in commit order). After the log has failed, it commits nothing. A
// transaction logged that Badger then refuses fails the store too: a
// restart would replay it.
func (s *Store) commitLogged(t loggedTxn) error {
	if s.wal == nil || s.wal.seg == nil { // read-only, or closed
		t.t.Discard()
		return fmt.Errorf("%w: store closed or read-only", storage.ErrUnavailable)
	}
	if len(*t.body) > 0 {
		if err := s.logDurably(*t.body); err != nil {
			t.t.Discard()
			return err
		}
	}
	if err := badgerErr(t.t.Commit()); err != nil {
		if len(*t.body) > 0 {
			s.fail(fmt.Errorf("commit after the write-ahead log took the transaction: %w", err))
		}
		return err
	}
	return nil
}

// badgerTxn, badgerItem and badgerIter are Badger behind the storage
// interfaces: the same calls, with Badger's errors turned into storage's.
type badgerTxn struct{ t *badger.Txn }

func (t badgerTxn) Get(key []byte) (storage.Item, error) {
	item, err := t.t.Get(key)
	if err != nil {
		return nil, badgerErr(err)
	}
	return badgerItem{item}, nil
}

func (t badgerTxn) Set(key, value []byte) error { return badgerErr(t.t.Set(key, value)) }
func (t badgerTxn) Delete(key []byte) error     { return badgerErr(t.t.Delete(key)) }
func (t badgerTxn) Commit() error               { return badgerErr(t.t.Commit()) }
func (t badgerTxn) Discard()                    { t.t.Discard() }

func (t badgerTxn) NewIterator(o storage.IterOptions) storage.Iterator {
	bo := badger.IteratorOptions{Prefix: o.Prefix, Reverse: o.Reverse, PrefetchValues: o.PrefetchValues, PrefetchSize: o.PrefetchSize}
	if !o.Reverse {
		return badgerIter{t.t.NewIterator(bo)}
	}
	// In reverse, Rewind must start at the prefix's last key, which
	// Badger reaches by seeking past it; its own prefix check would hide
	// the key it lands on, so the prefix is checked here.
	bo.Prefix = nil
	return &reverseIter{Iterator: t.t.NewIterator(bo), prefix: o.Prefix}
}

type reverseIter struct {
	*badger.Iterator
	prefix []byte
}

func (i *reverseIter) Rewind() {
	end := storage.PrefixEnd(i.prefix)
	if end == nil {
		i.Iterator.Rewind()
		return
	}
	i.Iterator.Seek(end)
	if i.Iterator.Valid() && bytes.Equal(i.Iterator.Item().Key(), end) {
		i.Iterator.Next()
	}
}

func (i *reverseIter) Valid() bool {
	return i.Iterator.Valid() && bytes.HasPrefix(i.Iterator.Item().Key(), i.prefix)
}

func (i *reverseIter) ValidForPrefix(p []byte) bool {
	return i.Valid() && bytes.HasPrefix(i.Iterator.Item().Key(), p)
}

func (i *reverseIter) Item() storage.Item { return badgerItem{i.Iterator.Item()} }

type badgerItem struct{ *badger.Item }

type badgerIter struct{ *badger.Iterator }

func (i badgerIter) Item() storage.Item { return badgerItem{i.Iterator.Item()} }

// badgerErr turns Badger's errors into storage's: a missing key, a
// transaction too big; the rest as they are.
func badgerErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, badger.ErrKeyNotFound):
		return storage.ErrNotFound
	case errors.Is(err, badger.ErrTxnTooBig):
		return fmt.Errorf("%w: %v", storage.ErrTooBig, err)
	}
	return err
}

// badgerLogger sends Badger's messages to slog.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any)   { b.l.Error(fmt.Sprintf(f, a...)) }
func (b badgerLogger) Warningf(f string, a ...any) { b.l.Warn(fmt.Sprintf(f, a...)) }
func (b badgerLogger) Infof(f string, a ...any)    { b.l.Debug(fmt.Sprintf(f, a...)) }
func (b badgerLogger) Debugf(f string, a ...any)   { b.l.Debug(fmt.Sprintf(f, a...)) }

// StreamBackup writes a consistent snapshot of every key to w in Badger's
// backup format (protobuf KV lists of at most maxSize bytes), with two
// readers rather than Badger's default eight: a backup shares the machine
// with live traffic.
func (s *Store) StreamBackup(w io.Writer, maxSize uint64) error {
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed {
		return fmt.Errorf("%w: store closed", storage.ErrUnavailable)
	}
	stream := s.db.NewStream()
	stream.NumGo = 2
	stream.MaxSize = maxSize
	stream.LogPrefix = "backup"
	_, err := stream.Backup(w, 0)
	return err
}

// NewLoader returns a bulk loader into the store (a new, empty one, for a
// restore), with at most maxPending writes in flight. What it loads goes
// past the write-ahead log: it is durable once the store is closed.
func (s *Store) NewLoader(maxPending int) *badger.KVLoader { return s.db.NewKVLoader(maxPending) }

// Hooks for tests and offline tools.

// SetReserve changes the free space writes leave (see CheckSpace).
func (s *Store) SetReserve(n int64) { s.reserve.Store(n) }

// SetSyncHooks sets functions run before and after each group fsync,
// before its waiters are answered (fault injection in tests); nil clears.
func (s *Store) SetSyncHooks(before, after func()) {
	set := func(p *atomic.Pointer[func()], f func()) {
		if f == nil {
			p.Store(nil)
		} else {
			p.Store(&f)
		}
	}
	set(&s.beforeSync, before)
	set(&s.afterSync, after)
}

// UpdateRaw commits fn past the vault's audit log: tests that plant or
// corrupt data.
func (s *Store) UpdateRaw(fn func(txn storage.Txn) error) error { return s.run(fn) }

// DB is the Badger database itself (tests that read what only Badger
// keeps, such as older versions of a key).
func (s *Store) DB() *badger.DB { return s.db }
