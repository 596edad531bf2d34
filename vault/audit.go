package vault

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentvault/agentvault/storage"
	"github.com/agentvault/agentvault/vault/auditlog"
)

// The audit log's types live in package auditlog; these names keep them
// where callers of the vault find them.
type (
	// AuditEntry is one record of the audit log.
	AuditEntry = auditlog.Entry
	// TokenDecision is the outcome for one token of a detokenize request.
	TokenDecision = auditlog.TokenDecision
	// Checkpoint is a signed statement of the audit chain's head.
	Checkpoint = auditlog.Checkpoint
	// VerifyResult is the outcome of recomputing the audit chain.
	VerifyResult = auditlog.VerifyResult
)

// Audit decisions.
const (
	DecisionOK      = auditlog.DecisionOK
	DecisionAllowed = auditlog.DecisionAllowed
	DecisionDenied  = auditlog.DecisionDenied
	DecisionPending = auditlog.DecisionPending
	DecisionPartial = auditlog.DecisionPartial
)

// RequestMeta is who asked and from where, for the audit log.
type RequestMeta struct {
	Actor      *Principal
	RequestID  string
	RemoteAddr string
	// Via and Client say the call came through MCP, from which client
	// (as the client reported it at initialize).
	Via, Client string
}

func auditKey(seq uint64) []byte {
	k := make([]byte, 2, 10)
	copy(k, "a/")
	return binary.BigEndian.AppendUint64(k, seq)
}

// decodeEntry reads a stored audit entry.
func decodeEntry(item storage.Item) (AuditEntry, error) {
	var e AuditEntry
	err := item.Value(func(v []byte) error {
		d, err := auditlog.DecodeEntry(v)
		if err == nil {
			e = *d
		}
		return err
	})
	return e, err
}

// mutation is one request to the single writer: prepare runs inside the
// shared write transaction, may read, must validate before it writes, and
// fills in the audit entry. An error from prepare before any write fails
// only this mutation; a storage error fails the whole batch.
type mutation struct {
	entry   *AuditEntry
	prepare func(txn storage.Txn) error
	size    int // estimated bytes written, to bound a batch's transaction
	// auditOnly marks a mutation that writes little beyond its audit
	// entry (a detokenize): it goes on deeper into the storage reserve.
	auditOnly bool
	done      chan error
}

// errSkip marks a prepare failure that wrote nothing: the mutation fails
// and the rest of the batch goes on.
type errSkip struct{ err error }

func (e errSkip) Error() string { return e.err.Error() }
func (e errSkip) Unwrap() error { return e.err }

// reject fails one mutation from its prepare without touching the batch.
func reject(err error) error { return errSkip{err} }

const (
	maxBatchBytes     = 4 << 20
	maxBatchMutations = 4096
)

// writer is the vault's single writer. Every durable change goes through
// it with its audit entry, in one transaction, so a change is never stored
// without its entry, the chain is appended in order, and checks that must
// not race (a grant's last use, a format-preserving token) see every
// earlier change.
type writer struct {
	store storage.Store
	reqs  chan *mutation
	done  chan struct{}
	// sync brings the service's memory up to date with the batch's
	// transaction, and checkActor refuses a revoked actor's mutation
	// (shared.go); nil in a writer without a service (restore).
	sync       func(txn storage.Txn) error
	checkActor func(e *AuditEntry) error
	// batchSize observes how many mutations each transaction holds (nil:
	// not observed).
	batchSize prometheus.Observer
	// exclusive says no other process writes this store (Badger holds
	// its directory's lock): the chain's head after a commit is then the
	// next batch's, kept in head (headKnown) instead of read back.
	exclusive bool
	head      chainHead
	headKnown bool

	// fault, when set by a test, makes every commit fail with it: fault
	// injection for the fail-closed tests, never set in production.
	fault atomic.Pointer[error]
}

type chainHead struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
}

func newWriter(store storage.Store) (*writer, error) {
	w := &writer{store: store, reqs: make(chan *mutation, 1024), done: make(chan struct{})}
	if _, err := readHead(store); err != nil { // the chain's last entry reads
		return nil, err
	}
	go w.run()
	return w, nil
}

// readHead finds the last audit entry.
func readHead(store storage.Store) (chainHead, error) {
	var head chainHead
	err := store.View(func(txn storage.Txn) (err error) {
		head, err = headIn(txn)
		return err
	})
	return head, err
}

// headIn finds the last audit entry as txn sees it.
func headIn(txn storage.Txn) (chainHead, error) {
	head := chainHead{Hash: auditlog.GenesisHash}
	it := txn.NewIterator(storage.IterOptions{Reverse: true, Prefix: []byte("a/"), PrefetchValues: true, PrefetchSize: 1})
	defer it.Close()
	it.Seek(auditKey(^uint64(0)))
	if !it.Valid() {
		return head, nil
	}
	e, err := decodeEntry(it.Item())
	if err != nil {
		return head, fmt.Errorf("read last audit entry: %w", err)
	}
	return chainHead{Seq: e.Seq, Hash: e.Hash}, nil
}

// apply submits a mutation and waits until it and its audit entry are
// durable, or failed. The caller's context is not consulted once the
// mutation is queued: a change that may have been made is always answered.
func (w *writer) apply(m *mutation) error {
	m.done = make(chan error, 1)
	if m.size > maxBatchBytes {
		return &Error{Kind: ErrTooLarge, Code: "batch_too_large", Message: "the request is too large for one transaction; send fewer records"}
	}
	select {
	case w.reqs <- m:
	case <-w.done:
		return fmt.Errorf("%w: shutting down", ErrUnavailable)
	}
	return <-m.done
}

func (w *writer) run() {
	var carry *mutation
	for {
		var batch []*mutation
		size := 0
		if carry != nil {
			batch, size, carry = append(batch, carry), carry.size, nil
		} else {
			select {
			case m := <-w.reqs:
				batch, size = append(batch, m), m.size
			case <-w.done:
				w.drain()
				return
			}
		}
	fill:
		for len(batch) < maxBatchMutations {
			select {
			case m := <-w.reqs:
				if size+m.size > maxBatchBytes {
					carry = m
					break fill
				}
				batch = append(batch, m)
				size += m.size
			default:
				break fill
			}
		}
		w.commit(batch)
	}
}

func (w *writer) drain() {
	for {
		select {
		case m := <-w.reqs:
			m.done <- fmt.Errorf("%w: shutting down", ErrUnavailable)
		default:
			return
		}
	}
}

// commit runs a batch in one transaction, appends its audit entries in
// order, commits, and answers each mutation once the commit is durable.
func (w *writer) commit(batch []*mutation) {
	if w.batchSize != nil {
		w.batchSize.Observe(float64(len(batch)))
	}
	txn := &batchTxn{WriteTxn: w.store.NewWriteTxn()}
	defer txn.Discard()
	head, err := w.start(txn)
	if err != nil {
		for _, m := range batch {
			m.done <- fmt.Errorf("%w: read the audit chain's head and shared state: %v", ErrUnavailable, err)
		}
		return
	}
	results := make([]error, len(batch))
	var fatal error
	// The disk's free space is read once per batch; a write the reserve
	// does not allow is refused before it touches the transaction.
	refuse := w.spaceCheck()
	for i, m := range batch {
		if results[i], fatal = w.add(txn, m, &head, refuse); fatal != nil {
			break
		}
	}
	if fatal == nil {
		fatal = txn.flush()
	}
	if fatal == nil {
		if f := w.fault.Load(); f != nil {
			fatal = *f
		} else {
			fatal = txn.Commit()
		}
	}
	w.head, w.headKnown = head, fatal == nil
	if fatal != nil {
		if errors.Is(fatal, storage.ErrTooBig) {
			fatal = &Error{Kind: ErrTooLarge, Code: "batch_too_large", Message: "the request is too large for one transaction; send fewer records"}
		} else {
			fatal = fmt.Errorf("%w: write with audit entry: %v", ErrUnavailable, fatal)
		}
		for _, m := range batch {
			m.done <- fatal
		}
		return
	}
	// Durability is awaited off the writer goroutine, so the next batch is
	// built while this one's fsync runs; the store groups the fsyncs.
	go func() {
		err := w.store.WaitDurable()
		for i, m := range batch {
			if results[i] != nil {
				m.done <- results[i]
			} else {
				m.done <- err
			}
		}
	}()
}

// start reads what a batch builds on: the chain's head as the store has
// it (another node on the same database may have appended since this
// one's last batch; the store runs read-write transactions one at a time,
// so none can append between this read and the commit), and the state
// nodes share.
func (w *writer) start(txn storage.Txn) (chainHead, error) {
	head, err := w.head, error(nil)
	if !w.exclusive || !w.headKnown {
		head, err = headIn(txn)
	}
	if err == nil && w.sync != nil {
		err = w.sync(txn)
	}
	return head, err
}

// spaceCheck returns what refuses a mutation for want of disk space: nil
// while there is room; otherwise the full disk's error for any mutation
// but an audit-only one, and for those too below the reserve's floor.
func (w *writer) spaceCheck() func(m *mutation) error {
	fullErr := w.store.CheckSpace(false)
	if fullErr == nil {
		return nil
	}
	if floorErr := w.store.CheckSpace(true); floorErr != nil {
		return func(*mutation) error { return floorErr }
	}
	return func(m *mutation) error {
		if m.auditOnly {
			return nil
		}
		return fullErr
	}
}

// add puts one mutation and its audit entry into the batch's transaction.
// result is the mutation's own refusal (the rest of the batch goes on);
// fatal fails the whole batch.
func (w *writer) add(txn *batchTxn, m *mutation, head *chainHead, refuse func(*mutation) error) (result, fatal error) {
	if refuse != nil {
		if err := refuse(m); err != nil {
			return err, nil
		}
	}
	if w.checkActor != nil {
		if err := w.checkActor(m.entry); err != nil {
			return err, nil
		}
	}
	if m.prepare != nil {
		if err := m.prepare(txn); err != nil {
			var skip errSkip
			if errors.As(err, &skip) {
				return skip.err, nil
			}
			return nil, err
		}
	}
	m.entry.Seq = head.Seq + 1
	m.entry.PrevHash = head.Hash
	if err := txn.Set(auditKey(m.entry.Seq), auditlog.Stored(m.entry)); err != nil {
		return nil, err
	}
	head.Seq, head.Hash = m.entry.Seq, m.entry.Hash
	return nil, nil
}

func (w *writer) isOpen() bool {
	select {
	case <-w.done:
		return false
	default:
		return true
	}
}

func (w *writer) close() {
	select {
	case <-w.done:
	default:
		close(w.done)
	}
}

// newEntry starts an audit entry for an action by meta's actor.
func (s *Service) newEntry(meta RequestMeta, action string) *AuditEntry {
	return &AuditEntry{
		Time: s.now(), Actor: actorID(meta.Actor), Action: action, Decision: DecisionOK,
		Fields: []string{}, RecordIDs: []string{}, RequestID: meta.RequestID, RemoteAddr: meta.RemoteAddr,
		Via: meta.Via, Client: meta.Client,
	}
}

// AuditHead returns the sequence number and hash of the last entry.
func (s *Service) AuditHead(ctx context.Context) (uint64, string, error) {
	h, err := readHead(s.store)
	return h.Seq, h.Hash, err
}
