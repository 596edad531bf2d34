package vault

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"time"

	"github.com/agentvault/agentvault/storage"
	"github.com/agentvault/agentvault/vault/auditlog"
)

// AuditFilter selects audit entries. Zero values match everything.
type AuditFilter struct {
	After uint64 // entries with seq > After
	Limit int    // at most this many (default 100, at most 1000)
	// Newest lists from the head backwards, with Before (when non-zero)
	// selecting entries with seq < Before; After is then ignored.
	Newest bool
	Before uint64
	Actor  string
	Action string
	// RecordID selects entries naming the record (in record_ids or in a
	// token decision). Pages of reads over 100 records name them by count
	// and hash only, so they are not found this way.
	RecordID string
	Since    time.Time
	Until    time.Time
}

// namesRecord reports whether an entry names the record.
func namesRecord(e *AuditEntry, id string) bool {
	if slices.Contains(e.RecordIDs, id) {
		return true
	}
	for _, d := range e.Tokens {
		if d.RecordID == id {
			return true
		}
	}
	return false
}

// MaxAuditPage bounds one page of the audit log.
const MaxAuditPage = 1000

// ListAudit returns entries in sequence order (or newest first, with
// f.Newest) and the seq to pass as After (or Before) for the next page, 0
// when there is none.
func (s *Service) ListAudit(ctx context.Context, f AuditFilter) ([]AuditEntry, uint64, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	if f.Limit > MaxAuditPage {
		return nil, 0, invalid("invalid_limit", "limit is at most %d", MaxAuditPage)
	}
	out := []AuditEntry{}
	var next uint64
	err := s.store.View(func(txn storage.Txn) error {
		it := txn.NewIterator(storage.IterOptions{Prefix: []byte("a/"), PrefetchValues: true, PrefetchSize: 64, Reverse: f.Newest})
		defer it.Close()
		start := auditKey(f.After + 1)
		if f.Newest {
			start = auditKey(math.MaxUint64)
			if f.Before > 0 {
				start = auditKey(f.Before - 1)
			}
		}
		for it.Seek(start); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			e, err := decodeEntry(it.Item())
			if err != nil {
				return fmt.Errorf("decode audit entry: %w", err)
			}
			if (f.Actor != "" && e.Actor != f.Actor) || (f.Action != "" && e.Action != f.Action) || (f.RecordID != "" && !namesRecord(&e, f.RecordID)) ||
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

// VerifyAudit recomputes the whole chain from the first entry, then checks
// every signed checkpoint against it, those stored beside the log and the
// witnesses (checkpoints saved outside it, optional). It names the first
// entry that is out of place (a deleted or reordered entry breaks the
// sequence or the link), altered (its bytes or its hash do not match its
// content), or cut off (a checkpoint signed an entry that is gone).
// publicKeyset is the checkpoint public key obtained out of band; nil uses
// the one stored beside the log, which someone able to rewrite the log
// could replace too (a witness then fails its signature).
func VerifyAudit(ctx context.Context, store storage.Store, publicKeyset []byte, witnesses ...Checkpoint) (VerifyResult, error) {
	c := auditlog.NewChain()
	err := store.View(func(txn storage.Txn) error {
		it := txn.NewIterator(storage.IterOptions{Prefix: []byte("a/"), PrefetchValues: true, PrefetchSize: 256})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			key := it.Item().Key()
			if len(key) != 10 {
				c.Fail("malformed audit key")
				return nil
			}
			stored, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			raw, err := auditlog.Decode(stored)
			if err != nil {
				raw = stored // a corrupt encoding fails as a bad entry
			}
			if !c.Add(binary.BigEndian.Uint64(key[2:]), raw) {
				return nil
			}
		}
		return nil
	})
	if err != nil {
		return VerifyResult{}, err
	}
	cps, err := Checkpoints(store)
	if err != nil {
		return VerifyResult{}, err
	}
	if publicKeyset == nil && len(cps)+len(witnesses) > 0 {
		if publicKeyset, err = StoredAuditPublicKey(store); err != nil {
			return VerifyResult{}, err
		}
	}
	return c.Finish(cps, witnesses, publicKeyset)
}

// VerifyAudit recomputes the chain of this service's log and checks its
// checkpoints, and any witnesses (checkpoints an auditor saved earlier),
// with the service's own public key.
func (s *Service) VerifyAudit(ctx context.Context, witnesses ...Checkpoint) (VerifyResult, error) {
	var pub []byte
	if k := s.signKey.Load(); k != nil {
		var err error
		if pub, err = k.PublicKeyset(); err != nil {
			return VerifyResult{}, err
		}
	} else if len(witnesses) > 0 {
		var err error
		if pub, err = s.AuditPublicKey(ctx); err != nil {
			return VerifyResult{}, err
		}
	}
	return VerifyAudit(ctx, s.store, pub, witnesses...)
}

// ExportAudit writes every entry after the given sequence number, in
// order, then every checkpoint, as JSON lines: the format VerifyExport
// reads.
func ExportAudit(ctx context.Context, store storage.Store, after uint64, w io.Writer) error {
	enc := json.NewEncoder(w)
	err := store.View(func(txn storage.Txn) error {
		it := txn.NewIterator(storage.IterOptions{Prefix: []byte("a/"), PrefetchValues: true, PrefetchSize: 256})
		defer it.Close()
		for it.Seek(auditKey(after + 1)); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			// The stored bytes exactly, so the export verifies byte for byte.
			if err := it.Item().Value(func(v []byte) error {
				v, err := auditlog.Decode(v)
				if err != nil {
					return err
				}
				if _, err := w.Write(v); err != nil {
					return err
				}
				_, err = w.Write([]byte("\n"))
				return err
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	cps, err := Checkpoints(store)
	if err != nil {
		return err
	}
	for i := range cps {
		if err := enc.Encode(auditlog.ExportLine{Checkpoint: &cps[i]}); err != nil {
			return err
		}
	}
	return nil
}
