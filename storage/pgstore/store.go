// Package pgstore keeps the vault in PostgreSQL: one table of ordered
// keys and values behind the storage interfaces, so several vault nodes
// can share one database.
//
// Keys are bytea, which PostgreSQL orders bytewise, as the contract wants.
// Writes are buffered in the transaction and sent in one statement when
// the transaction next reads a range or commits; a point read answers from
// the buffer first, so a transaction always sees its own writes. Every
// connection runs with synchronous_commit on: a commit is durable when
// it returns.
//
// Read-write transactions run one at a time across every node on the
// database: each takes a transaction-scoped advisory lock first, and reads
// at READ COMMITTED, so each statement sees everything committed before
// the lock was granted. That is the Badger store's single writer, made to
// hold across nodes: every read-modify-write (a grant's last use, an
// approval's redemption, the audit chain's next link) sees the one before
// it, wherever it ran. Its cost is one commit at a time; the vault's
// writer puts many requests in each (group commit). Reads (View) run in
// REPEATABLE READ snapshots, beside the writer, never waiting for it.
package pgstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/agentvault/agentvault/storage"
)

// Options tune the store; the zero value is fine.
type Options struct {
	Logger *slog.Logger
	// MaxConns bounds the connection pool (0: pgxpool's default, the
	// larger of 4 and the number of CPUs).
	MaxConns int32
}

// Store is a vault store in a PostgreSQL database.
type Store struct {
	pool *pgxpool.Pool
	log  *slog.Logger
}

// Open connects to the database at url and creates or migrates its
// schema (safe when several nodes start at once).
func Open(ctx context.Context, url string, o Options) (*Store, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("postgres url: %w", err)
	}
	// An acknowledged write must be on the server's disk (and, where the
	// operator runs synchronous replicas, theirs): whatever the server's
	// default, this connection commits synchronously.
	cfg.ConnConfig.RuntimeParams["synchronous_commit"] = "on"
	cfg.ConnConfig.RuntimeParams["application_name"] = "agentvault"
	// No statement, and no transaction left idle, holds on forever when
	// the server or the network stalls: the request fails as unavailable.
	cfg.ConnConfig.RuntimeParams["statement_timeout"] = "30000"
	cfg.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"] = "60000"
	if o.MaxConns > 0 {
		cfg.MaxConns = o.MaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: postgres: %w", storage.ErrUnavailable, err)
	}
	s := &Store{pool: pool, log: o.Logger}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// migrations are the schema's versions, applied in order, each once.
var migrations = []string{
	// 1: the ordered key-value table.
	`CREATE TABLE agentvault_kv (k bytea PRIMARY KEY, v bytea NOT NULL)`,
}

// migrateLock is the advisory lock nodes take to migrate one at a time.
const migrateLock = 0x61676e7476 // "agntv"

// migrate brings the schema to the latest version under an advisory lock,
// each version in its own transaction with its number.
func (s *Store) migrate(ctx context.Context) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("%w: postgres: %w", storage.ErrUnavailable, err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, migrateLock); err != nil {
		return fmt.Errorf("%w: postgres: lock for migration: %w", storage.ErrUnavailable, err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, migrateLock)
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS agentvault_schema (version int NOT NULL)`); err != nil {
		return fmt.Errorf("postgres: schema table: %w", err)
	}
	var version int
	err = conn.QueryRow(ctx, `SELECT version FROM agentvault_schema`).Scan(&version)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		if _, err := conn.Exec(ctx, `INSERT INTO agentvault_schema (version) VALUES (0)`); err != nil {
			return fmt.Errorf("postgres: schema version: %w", err)
		}
	case err != nil:
		return fmt.Errorf("postgres: schema version: %w", err)
	}
	if version > len(migrations) {
		return fmt.Errorf("postgres: the database's schema is version %d, newer than this agentvault knows (%d); upgrade agentvault", version, len(migrations))
	}
	for v := version; v < len(migrations); v++ {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, migrations[v]); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `UPDATE agentvault_schema SET version = $1`, v+1)
			return err
		})
		if err != nil {
			return fmt.Errorf("postgres: migration %d: %w", v+1, err)
		}
		s.log.Info("postgres schema migrated", "version", v+1)
	}
	return nil
}

// View runs fn in a read-only snapshot. Each statement is bounded
// (statement_timeout), not the transaction: a backup reads for as long as
// it takes.
func (s *Store) View(fn func(txn storage.Txn) error) error {
	ctx := context.Background()
	bctx, cancel := context.WithTimeout(ctx, beginTimeout)
	tx, err := s.pool.BeginTx(bctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	cancel()
	if err != nil {
		return unavailable(err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	t := &txn{ctx: ctx, tx: tx, readOnly: true}
	err = fn(t)
	if err == nil {
		err = t.err
	}
	return err
}

// maxRetries bounds how often Update reruns a transaction that lost a
// race (a deadlock with a statement outside the vault's lock).
const maxRetries = 16

// Update runs fn in a read-write transaction (under the write lock) and
// commits it; a commit is durable when it returns. fn reruns if the
// database aborts the transaction to break a deadlock.
func (s *Store) Update(ctx context.Context, _ bool, fn func(txn storage.Txn) error) error {
	for attempt := 0; ; attempt++ {
		t, err := s.begin(ctx)
		if err != nil {
			return err
		}
		err = fn(t)
		if err == nil {
			err = t.Commit()
		}
		t.Discard()
		if isRetryable(err) && attempt < maxRetries {
			time.Sleep(time.Duration(attempt+1) * time.Millisecond)
			continue
		}
		return err
	}
}

// writeLock is the advisory lock every read-write transaction holds.
const writeLock = 0x61677277 // "agrw"

// beginWrite starts a transaction and takes the write lock in one round
// trip (the simple protocol runs both statements).
var beginWrite = fmt.Sprintf("BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock(%d)", writeLock)

// beginTimeout bounds the wait for a pooled connection and the BEGIN
// (with the write lock): a transaction that cannot start in that time
// fails as unavailable rather than waiting for ever (as requests once
// did when each held a connection and waited for a second one).
const beginTimeout = 30 * time.Second

// begin starts a read-write transaction holding the write lock.
func (s *Store) begin(ctx context.Context) (*txn, error) {
	bctx, cancel := context.WithTimeout(ctx, beginTimeout)
	tx, err := s.pool.BeginTx(bctx, pgx.TxOptions{BeginQuery: beginWrite})
	cancel()
	if err != nil {
		return nil, unavailable(err)
	}
	return &txn{ctx: ctx, tx: tx, pending: map[string]*[]byte{}}, nil
}

// NewWriteTxn starts a read-write transaction (under the write lock) for
// the caller to commit.
func (s *Store) NewWriteTxn() storage.WriteTxn {
	t, err := s.begin(context.Background())
	if err != nil {
		return failedTxn{err}
	}
	return t
}

// WaitDurable returns at once: a commit is durable when it returns.
func (s *Store) WaitDurable() error { return nil }

// CheckSpace checks nothing: the database server manages its disk.
func (s *Store) CheckSpace(bool) error { return nil }

// Check reports whether the database answers.
func (s *Store) Check() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var one int
	if err := s.pool.QueryRow(ctx, `SELECT 1`).Scan(&one); err != nil {
		return unavailable(err)
	}
	return nil
}

// Close closes the connection pool.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// Refused reports an error where the server answered and said no:
// authentication, authorization or a database that does not exist, which
// waiting does not cure (unlike a server that does not answer).
func Refused(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (strings.HasPrefix(pe.Code, "28") || pe.Code == "3D000" || pe.Code == "42501")
}

// isRetryable reports a transaction that lost a race: a serialization
// failure or a deadlock, which rerunning it resolves.
func isRetryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}

// unavailable marks an error of the database or the connection as the
// store being unavailable, keeping it in the chain (Refused and
// isRetryable look for the server's answer there).
func unavailable(err error) error {
	if err == nil || errors.Is(err, storage.ErrUnavailable) {
		return err
	}
	return fmt.Errorf("%w: postgres: %w", storage.ErrUnavailable, err)
}

// txn is a transaction with its buffered writes: pending maps a key to its
// new value, or to nil for a deletion.
type txn struct {
	ctx      context.Context
	tx       pgx.Tx
	readOnly bool
	pending  map[string]*[]byte
	done     bool
	// err is the first failure of an iterator, which has no way to say
	// so itself: the transaction then fails (View returns it, Commit
	// refuses), so a scan cut short never passes for a complete one.
	err error
}

var errReadOnly = errors.New("storage: write in a read-only transaction")

func (t *txn) Get(key []byte) (storage.Item, error) {
	if v, ok := t.pending[string(key)]; ok {
		if v == nil {
			return nil, storage.ErrNotFound
		}
		return &item{k: slices.Clone(key), v: *v}, nil
	}
	var v []byte
	err := t.tx.QueryRow(t.ctx, `SELECT v FROM agentvault_kv WHERE k = $1`, key).Scan(&v)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, storage.ErrNotFound
	case err != nil:
		return nil, t.fail(err)
	}
	return &item{k: slices.Clone(key), v: v}, nil
}

func (t *txn) Set(key, value []byte) error {
	if t.readOnly {
		return errReadOnly
	}
	v := append([]byte{}, value...) // never nil: a nil value is an empty one, not NULL
	t.pending[string(key)] = &v
	return nil
}

func (t *txn) Delete(key []byte) error {
	if t.readOnly {
		return errReadOnly
	}
	t.pending[string(key)] = nil
	return nil
}

// fail keeps a serialization failure recognisable (the caller retries)
// and marks anything else as the store being unavailable.
func (t *txn) fail(err error) error {
	if isRetryable(err) {
		return err
	}
	return unavailable(err)
}

// flush sends the buffered writes: one upsert of every set key and one
// delete of every deleted key.
func (t *txn) flush() error {
	if len(t.pending) == 0 {
		return nil
	}
	var setK, setV, delK [][]byte
	for k, v := range t.pending {
		if v == nil {
			delK = append(delK, []byte(k))
		} else {
			setK, setV = append(setK, []byte(k)), append(setV, *v)
		}
	}
	if len(delK) > 0 {
		if _, err := t.tx.Exec(t.ctx, `DELETE FROM agentvault_kv WHERE k = ANY($1)`, delK); err != nil {
			return t.fail(err)
		}
	}
	if len(setK) > 0 {
		if _, err := t.tx.Exec(t.ctx, `INSERT INTO agentvault_kv (k, v) SELECT * FROM unnest($1::bytea[], $2::bytea[])
			ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v`, setK, setV); err != nil {
			return t.fail(err)
		}
	}
	clear(t.pending)
	return nil
}

func (t *txn) Commit() error {
	if t.done {
		return errors.New("storage: transaction already finished")
	}
	t.done = true
	err := t.err
	if err == nil {
		err = t.flush()
	}
	if err != nil {
		t.tx.Rollback(context.WithoutCancel(t.ctx))
		return err
	}
	if err := t.tx.Commit(t.ctx); err != nil {
		return t.fail(err)
	}
	return nil
}

func (t *txn) Discard() {
	if !t.done {
		t.done = true
		t.tx.Rollback(context.WithoutCancel(t.ctx))
	}
}

func (t *txn) NewIterator(o storage.IterOptions) storage.Iterator {
	page := o.PrefetchSize // a seek for one key asks for one row, not a page
	if page <= 0 {
		page = 256
	}
	it := &iterator{t: t, o: o, page: page}
	if err := t.flush(); err != nil { // the range query must see this transaction's writes
		it.setErr(err)
	}
	return it
}

// failedTxn is a write transaction that could not begin: every call
// reports why.
type failedTxn struct{ err error }

func (f failedTxn) Get([]byte) (storage.Item, error)                 { return nil, f.err }
func (f failedTxn) Set([]byte, []byte) error                         { return f.err }
func (f failedTxn) Delete([]byte) error                              { return f.err }
func (f failedTxn) NewIterator(storage.IterOptions) storage.Iterator { return &iterator{err: f.err} }
func (f failedTxn) Commit() error                                    { return f.err }
func (f failedTxn) Discard()                                         {}

type item struct {
	k, v []byte
	t    *txn // set when the value was not fetched with the key
}

func (i *item) Key() []byte { return i.k }

func (i *item) value() ([]byte, error) {
	if i.t == nil {
		return i.v, nil
	}
	got, err := i.t.Get(i.k)
	if err != nil {
		return nil, err
	}
	i.v, i.t = got.(*item).v, nil
	return i.v, nil
}

func (i *item) Value(fn func(v []byte) error) error {
	v, err := i.value()
	if err != nil {
		return err
	}
	return fn(v)
}

func (i *item) ValueCopy(dst []byte) ([]byte, error) {
	v, err := i.value()
	if err != nil {
		return nil, err
	}
	return append(dst[:0], v...), nil
}

// iterator reads its range a page at a time, each page one query read
// whole (a connection runs one query at a time, and callers read other
// keys while they iterate).
type iterator struct {
	t    *txn
	o    storage.IterOptions
	page int
	rows []*item
	pos  int
	more bool // the last page was full: there may be more
	err  error
}

// load reads the page of keys from `from` (inclusive or not) in the
// iterator's direction, within its prefix.
func (it *iterator) load(from []byte, inclusive bool) {
	it.rows, it.pos, it.more = it.rows[:0], 0, false
	if it.err != nil {
		return
	}
	cols := "k, v"
	if !it.o.PrefetchValues {
		cols = "k, NULL::bytea"
	}
	var conds []string
	var args []any
	arg := func(v any) string { args = append(args, v); return fmt.Sprintf("$%d", len(args)) }
	if len(it.o.Prefix) > 0 {
		conds = append(conds, "k >= "+arg(it.o.Prefix))
		if end := storage.PrefixEnd(it.o.Prefix); end != nil {
			conds = append(conds, "k < "+arg(end))
		}
	}
	order := "ASC"
	if from != nil {
		op := map[[2]bool]string{{false, true}: ">=", {false, false}: ">", {true, true}: "<=", {true, false}: "<"}[[2]bool{it.o.Reverse, inclusive}]
		conds = append(conds, "k "+op+" "+arg(from))
	}
	if it.o.Reverse {
		order = "DESC"
	}
	q := "SELECT " + cols + " FROM agentvault_kv"
	if len(conds) > 0 {
		q += " WHERE " + strings.Join(conds, " AND ")
	}
	q += " ORDER BY k " + order + " LIMIT " + arg(it.page)
	rows, err := it.t.tx.Query(it.t.ctx, q, args...)
	if err != nil {
		it.setErr(it.t.fail(err))
		return
	}
	for rows.Next() {
		var k, v []byte
		if err := rows.Scan(&k, &v); err != nil {
			rows.Close()
			it.setErr(it.t.fail(err))
			return
		}
		row := &item{k: k, v: v}
		if !it.o.PrefetchValues {
			row.t = it.t
		}
		it.rows = append(it.rows, row)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		it.setErr(it.t.fail(err))
		return
	}
	it.more = len(it.rows) == it.page
}

// setErr stops the iterator and fails its transaction.
func (it *iterator) setErr(err error) {
	it.err, it.rows, it.pos, it.more = err, nil, 0, false
	if it.t != nil && it.t.err == nil {
		it.t.err = err
	}
}

func (it *iterator) Rewind() {
	if it.o.Reverse && len(it.o.Prefix) > 0 {
		// The last key of the prefix: below its end.
		if end := storage.PrefixEnd(it.o.Prefix); end != nil {
			it.load(end, false)
			return
		}
	}
	it.load(nil, true)
}

func (it *iterator) Seek(key []byte) { it.load(slices.Clone(key), true) }

func (it *iterator) Valid() bool { return it.pos < len(it.rows) }

func (it *iterator) ValidForPrefix(p []byte) bool {
	return it.Valid() && bytes.HasPrefix(it.rows[it.pos].k, p)
}

func (it *iterator) Next() {
	it.pos++
	if it.pos == len(it.rows) && it.more {
		it.load(it.rows[len(it.rows)-1].k, false)
	}
}

func (it *iterator) Item() storage.Item { return it.rows[it.pos] }

func (it *iterator) Close() {}
