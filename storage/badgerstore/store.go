// Package badgerstore is the vault's embedded store: Badger on local disk,
// with group commit and a free-space reserve, behind the storage
// interfaces.
package badgerstore

import (
	"bytes"
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
	"golang.org/x/sys/unix"
)

// Store is agentvault's Badger database with group commit: a transaction
// is acknowledged only after an fsync that started after it committed, and
// transactions that commit while one fsync runs share the next one. Badger's
// own SyncWrites would fsync once per transaction.
type Store struct {
	db      *badger.DB
	syncReq chan chan error
	done    chan struct{}
	wg      sync.WaitGroup

	closeMu sync.RWMutex
	closed  bool

	// wmu runs read-write transactions one at a time, from their start to
	// their commit (not the fsync after it, which they share): what makes
	// a read-modify-write safe without conflict detection.
	wmu sync.Mutex

	syncBatch prometheus.Histogram
	syncTime  prometheus.Histogram

	// beforeSync and afterSync, when set by a test, run around each group
	// fsync, before its waiters are answered: fault injection (a slow
	// disk, a memtable switch at the worst moment) and inspection, never
	// set in production.
	beforeSync atomic.Pointer[func()]
	afterSync  atomic.Pointer[func()]

	dir          string
	reserve      atomic.Int64
	fullRefusals prometheus.Counter
	// created watches the database directory for new files (inotify), so
	// syncRetiredLogs lists it only after a memtable or value log was
	// added; -1 when unavailable (then it lists every round).
	// retiredPending (sync loop only) keeps listing after a failed round.
	created        int
	retiredPending bool
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
}

// Open opens (or creates) the Badger database in dir.
func Open(dir string, o Options) (*Store, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
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
		db:  db,
		dir: dir,
		fullRefusals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agentvault_storage_full_refusals_total",
			Help: "Writes refused because the data directory's filesystem was down to its reserve.",
		}),
		syncReq: make(chan chan error, 4096),
		done:    make(chan struct{}),
		syncBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "agentvault_store_sync_batch_transactions",
			Help:    "Transactions made durable by one fsync (group commit).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12),
		}),
		syncTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "agentvault_store_sync_seconds",
			Help:    "Time one group-commit fsync took.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
	}
	s.reserve.Store(o.Reserve)
	s.created = watchCreates(dir, o.ReadOnly)
	if o.Registry != nil {
		o.Registry.MustRegister(s.syncBatch, s.syncTime, s.fullRefusals, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
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
	s.wg.Add(1)
	go s.syncLoop()
	return s, nil
}

// syncLoop is the single fsync worker. Each round takes every waiter that
// has arrived, syncs once, and answers them all.
func (s *Store) syncLoop() {
	defer s.wg.Done()
	batch := make([]chan error, 0, 256)
	for {
		select {
		case <-s.done:
			return
		case first := <-s.syncReq:
			batch = append(batch[:0], first)
		drain:
			for {
				select {
				case ch := <-s.syncReq:
					batch = append(batch, ch)
				default:
					break drain
				}
			}
			if hook := s.beforeSync.Load(); hook != nil {
				(*hook)()
			}
			start := time.Now()
			err := s.db.Sync()
			if err == nil {
				err = s.syncRetiredLogs()
			}
			s.syncTime.Observe(time.Since(start).Seconds())
			if hook := s.afterSync.Load(); hook != nil {
				(*hook)()
			}
			s.syncBatch.Observe(float64(len(batch)))
			if err != nil {
				err = fmt.Errorf("%w: fsync: %v", storage.ErrUnavailable, err)
			}
			for _, ch := range batch {
				ch <- err
			}
		}
	}
}

// syncRetiredLogs makes up for what Badger's DB.Sync leaves out. DB.Sync
// syncs the current memtable's write-ahead log and the current value log;
// a transaction that committed into a memtable that filled up (and was
// set aside for flushing) before the sync lives only in that older log
// until the flush writes it to a table, and without this it would be
// acknowledged unsynced (TestAcknowledgedWritesSurviveMemtableSwitch
// shows it). It runs after DB.Sync: a memtable set aside before the sync
// began has its log here; one set aside after was the current one when
// DB.Sync synced it. A set-aside log takes no more writes, so one fsync
// after it is set aside is enough: the directory is listed only when a
// file was created since the last round (a new memtable or value log
// comes with one), otherwise this costs one non-blocking read. Logs
// already clean cost a cheap fsync; one flushed meanwhile is gone, its
// data in a synced table. The value log rotates at 1 GiB, so the one
// before the newest is synced too.
func (s *Store) syncRetiredLogs() error {
	if s.created >= 0 && !drainCreates(s.created) && !s.retiredPending {
		return nil
	}
	// Until a listing and its fsyncs succeed, every round tries again.
	s.retiredPending = true
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
		if err := fsyncFile(filepath.Join(s.dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("sync %s: %w", name, err)
		}
	}
	s.retiredPending = false
	return nil
}

// watchCreates starts an inotify watch for files created in dir, or
// returns -1 (read-only stores write nothing; a kernel without inotify
// falls back to listing every round).
func watchCreates(dir string, readOnly bool) int {
	if readOnly {
		return -1
	}
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return -1
	}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_MOVED_TO); err != nil {
		unix.Close(fd)
		return -1
	}
	return fd
}

// drainCreates reads every queued event and reports whether there was
// any (or the queue overflowed, or reading failed: then list anyway).
func drainCreates(fd int) bool {
	var buf [4096]byte
	seen := false
	for {
		n, err := unix.Read(fd, buf[:])
		if n > 0 {
			seen = true
			continue
		}
		if errors.Is(err, unix.EAGAIN) {
			return seen
		}
		return true
	}
}

func fsyncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// WaitDurable returns once everything committed before the call is on disk.
func (s *Store) WaitDurable() error {
	ch := make(chan error, 1)
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return fmt.Errorf("%w: store closed", storage.ErrUnavailable)
	}
	s.syncReq <- ch
	s.closeMu.RUnlock()
	// The commit already happened; wait for durability even if the client
	// went away, so an acknowledged write is never reported as lost.
	return <-ch
}

// maxConflictRetries bounds how often Update reruns a transaction that lost
// a write-write race.
const maxConflictRetries = 8

// Update runs fn in a read-write transaction, commits it, and returns once
// it is durable. fn may run more than once if another transaction
// conflicts, so it must not have side effects outside txn. small marks a
// write the audit log needs (a checkpoint): it goes on into the storage
// reserve, as reveals do.
func (s *Store) Update(ctx context.Context, small bool, fn func(txn storage.Txn) error) error {
	return s.update(ctx, small, fn)
}

func (s *Store) update(ctx context.Context, small bool, fn func(txn storage.Txn) error) error {
	if err := s.CheckSpace(small); err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		s.wmu.Lock()
		txn := s.db.NewTransaction(true)
		err := fn(badgerTxn{txn})
		if err == nil {
			err = txn.Commit()
		}
		txn.Discard()
		s.wmu.Unlock()
		switch {
		case err == nil:
			return s.WaitDurable()
		case errors.Is(err, badger.ErrConflict) && attempt < maxConflictRetries:
			continue
		case errors.Is(err, badger.ErrTxnTooBig), errors.Is(err, storage.ErrTooBig):
			return fmt.Errorf("%w: %v", storage.ErrTooBig, err)
		case isStorageErr(err):
			return fmt.Errorf("%w: %v", storage.ErrUnavailable, err)
		default:
			return err
		}
	}
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

// Close stops the fsync worker after a final sync and closes Badger.
func (s *Store) Close() error {
	s.closeMu.Lock()
	if s.closed {
		s.closeMu.Unlock()
		return nil
	}
	s.closed = true
	s.closeMu.Unlock()
	close(s.done)
	s.wg.Wait()
	// Answer anyone still queued; their commits are covered by the final
	// Sync inside Close.
	syncErr := s.db.Sync()
	for {
		select {
		case ch := <-s.syncReq:
			ch <- syncErr
			continue
		default:
		}
		break
	}
	if s.created >= 0 {
		unix.Close(s.created)
	}
	return s.db.Close()
}

// NewWriteTxn starts a read-write transaction for the single writer,
// which commits it and then waits for durability itself (WaitDurable).
// It holds the store's write lock until it is committed or discarded.
func (s *Store) NewWriteTxn() storage.WriteTxn {
	s.wmu.Lock()
	return &writeTxn{badgerTxn: badgerTxn{s.db.NewTransaction(true)}, unlock: &s.wmu}
}

// writeTxn is a read-write transaction holding the store's write lock.
type writeTxn struct {
	badgerTxn
	unlock *sync.Mutex
}

func (w *writeTxn) release() {
	if w.unlock != nil {
		w.unlock.Unlock()
		w.unlock = nil
	}
}

func (w *writeTxn) Commit() error {
	defer w.release()
	return w.badgerTxn.Commit()
}

func (w *writeTxn) Discard() {
	w.badgerTxn.Discard()
	w.release()
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
// restore), with at most maxPending writes in flight.
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

// UpdateRaw commits fn straight to Badger, past group commit and the
// vault's audit log: tests that plant or corrupt data.
func (s *Store) UpdateRaw(fn func(txn storage.Txn) error) error {
	return s.db.Update(func(t *badger.Txn) error { return fn(badgerTxn{t}) })
}

// DB is the Badger database itself (tests that read what only Badger
// keeps, such as older versions of a key).
func (s *Store) DB() *badger.DB { return s.db }
