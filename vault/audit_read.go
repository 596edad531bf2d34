package vault

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// AuditFilter selects audit entries. Zero values match everything.
type AuditFilter struct {
	After  uint64 // entries with seq > After
	Limit  int    // at most this many (default 100, at most 1000)
	Actor  string
	Action string
	Since  time.Time
	Until  time.Time
}

// MaxAuditPage bounds one page of the audit log.
const MaxAuditPage = 1000

// ListAudit returns entries in sequence order and the seq to pass as After
// for the next page (0 when there is none).
func (s *Service) ListAudit(ctx context.Context, f AuditFilter) ([]AuditEntry, uint64, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	if f.Limit > MaxAuditPage {
		return nil, 0, invalid("invalid_limit", "limit is at most %d", MaxAuditPage)
	}
	out := []AuditEntry{}
	var next uint64
	err := s.store.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte("a/"), PrefetchValues: true, PrefetchSize: 64})
		defer it.Close()
		for it.Seek(auditKey(f.After + 1)); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			var e AuditEntry
			if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &e) }); err != nil {
				return fmt.Errorf("decode audit entry: %w", err)
			}
			if (f.Actor != "" && e.Actor != f.Actor) || (f.Action != "" && e.Action != f.Action) ||
				(!f.Since.IsZero() && e.Time.Before(f.Since)) || (!f.Until.IsZero() && !e.Time.Before(f.Until)) {
				continue
			}
			if len(out) == f.Limit {
				next = out[len(out)-1].Seq
				return nil
			}
			out = append(out, e)
		}
		return nil
	})
	return out, next, err
}

// VerifyResult is the outcome of recomputing the audit chain.
type VerifyResult struct {
	OK          bool   `json:"ok"`
	Entries     uint64 `json:"entries"`
	Head        string `json:"head,omitempty"`
	FirstBadSeq uint64 `json:"first_bad_seq,omitempty"`
	Reason      string `json:"reason,omitempty"`
}

// VerifyAudit recomputes the whole chain from the first entry. It names the
// first entry that is out of place (a deleted or reordered entry breaks the
// sequence or the link), altered (its bytes or its hash do not match its
// content) or not linked to the one before.
func VerifyAudit(ctx context.Context, store *Store) (VerifyResult, error) {
	res := VerifyResult{OK: true, Head: genesisHash}
	prev := genesisHash
	var want uint64 = 1
	err := store.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte("a/"), PrefetchValues: true, PrefetchSize: 256})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			key := it.Item().Key()
			bad := func(reason string) {
				res = VerifyResult{OK: false, Entries: res.Entries, FirstBadSeq: want, Reason: reason}
			}
			if len(key) != 10 {
				bad("malformed audit key")
				return nil
			}
			keySeq := binary.BigEndian.Uint64(key[2:])
			raw, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			var e AuditEntry
			if err := json.Unmarshal(raw, &e); err != nil {
				bad(fmt.Sprintf("entry %d does not decode", keySeq))
				return nil
			}
			switch {
			case keySeq != want:
				bad(fmt.Sprintf("expected entry %d, found %d: entries missing or reordered", want, keySeq))
			case e.Seq != keySeq:
				bad(fmt.Sprintf("entry stored at %d says it is %d: entries moved", keySeq, e.Seq))
			case e.PrevHash != prev:
				bad(fmt.Sprintf("entry %d does not link to the entry before it", keySeq))
			case e.Hash != entryHash(&e):
				bad(fmt.Sprintf("entry %d was altered: its hash does not match its content", keySeq))
			default:
				if canon, _ := json.Marshal(&e); !bytes.Equal(canon, raw) {
					bad(fmt.Sprintf("entry %d was altered: its stored bytes differ from its content", keySeq))
				}
			}
			if !res.OK {
				return nil
			}
			prev = e.Hash
			res.Entries++
			res.Head = e.Hash
			want++
		}
		return nil
	})
	return res, err
}

// VerifyAudit recomputes the chain of this service's log.
func (s *Service) VerifyAudit(ctx context.Context) (VerifyResult, error) {
	return VerifyAudit(ctx, s.store)
}

// ExportAudit calls fn for every entry after the given sequence number, in
// order, for offline export.
func ExportAudit(ctx context.Context, store *Store, after uint64, fn func(AuditEntry) error) error {
	return store.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte("a/"), PrefetchValues: true, PrefetchSize: 256})
		defer it.Close()
		for it.Seek(auditKey(after + 1)); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			var e AuditEntry
			if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &e) }); err != nil {
				return fmt.Errorf("decode audit entry: %w", err)
			}
			if err := fn(e); err != nil {
				return err
			}
		}
		return nil
	})
}
