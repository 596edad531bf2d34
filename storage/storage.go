// Package storage is the contract between the vault and where it keeps
// its data: an ordered key-value store with transactions. The vault's
// domain is written against these interfaces alone; an implementation
// (Badger on local disk, PostgreSQL for several nodes) provides them.
//
// What an implementation guarantees:
//   - keys are ordered bytewise; iteration visits them in that order (or
//     the reverse), restricted to a prefix when one is given;
//   - a transaction sees a consistent snapshot plus its own writes, and
//     its writes land all together or not at all;
//   - Get and iteration return values that stay valid only as documented
//     on Item: a caller that keeps one copies it (ValueCopy);
//   - errors are ErrNotFound for a missing key, ErrTooBig for a
//     transaction larger than the store takes, and otherwise wrap
//     ErrUnavailable when the store cannot answer now.
package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
)

var (
	// ErrNotFound reports a key that is not stored.
	ErrNotFound = errors.New("key not found")
	// ErrTooBig reports a transaction larger than the store takes.
	ErrTooBig = errors.New("transaction too big")
	// ErrUnavailable reports that the store cannot take or give data now.
	ErrUnavailable = errors.New("storage unavailable")
)

// Txn is a transaction: reads see a snapshot and the transaction's own
// writes. A read-only transaction refuses Set and Delete.
type Txn interface {
	Get(key []byte) (Item, error)
	Set(key, value []byte) error
	Delete(key []byte) error
	NewIterator(o IterOptions) Iterator
}

// WriteTxn is a read-write transaction its owner commits or discards.
type WriteTxn interface {
	Txn
	Commit() error
	Discard()
}

// Item is one key and its value. Key and the slice Value passes to fn are
// valid only until the iterator moves or the transaction ends.
type Item interface {
	Key() []byte
	Value(fn func(v []byte) error) error
	ValueCopy(dst []byte) ([]byte, error)
}

// IterOptions choose what an iterator visits. PrefetchValues and
// PrefetchSize are hints (how many values to fetch ahead); an
// implementation may ignore them.
type IterOptions struct {
	Prefix         []byte
	Reverse        bool
	PrefetchValues bool
	PrefetchSize   int
}

// Iterator walks keys in order. Seek moves to the first key at or after
// key (at or before, in reverse); Rewind to the first key of the prefix.
// Valid reports whether it stands on a key of the prefix.
type Iterator interface {
	Rewind()
	Seek(key []byte)
	Valid() bool
	ValidForPrefix(prefix []byte) bool
	Next()
	Item() Item
	Close()
}

// ErrStorageFull reports that the store's disk is down to its reserve: the
// write was refused before it could fill the disk, and nothing was stored.
// It passes once space returns.
var ErrStorageFull = fmt.Errorf("%w: storage full", ErrUnavailable)

// Store is a transactional key-value store whose commits are durable
// before they are acknowledged.
type Store interface {
	// View runs fn in a read-only transaction.
	View(fn func(txn Txn) error) error
	// Update runs fn in a read-write transaction, commits it and returns
	// once it is durable. Read-write transactions are serializable: fn may
	// run more than once (a conflict), so it must not act outside txn. small marks a write the audit log needs,
	// allowed deeper into a full disk (CheckSpace).
	Update(ctx context.Context, small bool, fn func(txn Txn) error) error
	// NewWriteTxn starts a read-write transaction its caller commits;
	// WaitDurable returns once every commit made before it is durable.
	NewWriteTxn() WriteTxn
	WaitDurable() error
	// CheckSpace refuses a write when the store is down to its reserve
	// (ErrStorageFull); an auditOnly write may go further.
	CheckSpace(auditOnly bool) error
	// Check reports whether the store answers reads and takes writes.
	Check() error
	Close() error
}

// PrefixEnd is the first key after every key that starts with p, or nil
// if there is none (p is empty or all 0xff).
func PrefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}
