package vault

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/tink-crypto/tink-go/v2/tink"

	"github.com/agentvault/agentvault/keys"
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
	Since  time.Time
	Until  time.Time
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
	err := s.store.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte("a/"), PrefetchValues: true, PrefetchSize: 64, Reverse: f.Newest})
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
	Checkpoints int    `json:"checkpoints"`
	// Witnessed counts the checkpoints saved outside the database that the
	// log was held to (all must match).
	Witnessed int `json:"witnessed,omitempty"`
	// LastCheckpoint is the newest entry a valid checkpoint covers;
	// UnsignedEntries how far the head is past it: the entries someone
	// able to rewrite the database could still cut off unnoticed, unless
	// a newer checkpoint was saved outside.
	LastCheckpoint  uint64 `json:"last_checkpoint"`
	UnsignedEntries uint64 `json:"unsigned_entries"`
	FirstBadSeq     uint64 `json:"first_bad_seq,omitempty"`
	Reason          string `json:"reason,omitempty"`
}

// chainChecker recomputes the chain entry by entry, in order.
type chainChecker struct {
	res    VerifyResult
	prev   string
	hashes []string
}

func newChainChecker() *chainChecker {
	return &chainChecker{res: VerifyResult{OK: true, Head: genesisHash}, prev: genesisHash}
}

// add checks the next entry; storedAt is the sequence number its storage
// key says. It returns false, with the result filled in, at the first bad
// entry.
func (c *chainChecker) add(storedAt uint64, raw []byte) bool {
	want := uint64(len(c.hashes)) + 1
	bad := func(format string, args ...any) bool {
		c.res = VerifyResult{OK: false, Entries: c.res.Entries, FirstBadSeq: want, Reason: fmt.Sprintf(format, args...)}
		return false
	}
	var e AuditEntry
	if err := json.Unmarshal(raw, &e); err != nil {
		return bad("entry %d does not decode", storedAt)
	}
	switch {
	case storedAt != want:
		return bad("expected entry %d, found %d: entries missing or reordered", want, storedAt)
	case e.Seq != storedAt:
		return bad("entry stored at %d says it is %d: entries moved", storedAt, e.Seq)
	case e.PrevHash != c.prev:
		return bad("entry %d does not link to the entry before it", storedAt)
	case e.Hash != entryHash(&e):
		return bad("entry %d was altered: its hash does not match its content", storedAt)
	}
	if sealed := sealEntry(&e); !bytes.Equal(sealed, raw) {
		return bad("entry %d was altered: its stored bytes differ from its content", storedAt)
	}
	c.prev = e.Hash
	c.hashes = append(c.hashes, e.Hash)
	c.res.Entries++
	c.res.Head = e.Hash
	return true
}

// finish checks the stored checkpoints and the witnesses against the
// verified chain.
func (c *chainChecker) finish(cps, witnesses []Checkpoint, publicKeyset []byte) (VerifyResult, error) {
	if !c.res.OK {
		return c.res, nil
	}
	var verifier tink.Verifier
	if publicKeyset != nil {
		v, err := keys.NewVerifier(publicKeyset)
		if err != nil {
			return VerifyResult{}, err
		}
		verifier = v
	} else if len(cps) > 0 || len(witnesses) > 0 {
		return VerifyResult{}, errors.New("checkpoints present but no public key to check them")
	}
	checkCheckpoints(&c.res, c.hashes, cps, witnesses, verifier)
	return c.res, nil
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
func VerifyAudit(ctx context.Context, store *Store, publicKeyset []byte, witnesses ...Checkpoint) (VerifyResult, error) {
	c := newChainChecker()
	err := store.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte("a/"), PrefetchValues: true, PrefetchSize: 256})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			key := it.Item().Key()
			if len(key) != 10 {
				c.res = VerifyResult{OK: false, Entries: c.res.Entries, FirstBadSeq: uint64(len(c.hashes)) + 1, Reason: "malformed audit key"}
				return nil
			}
			stored, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			raw, err := entryJSON(stored)
			if err != nil {
				raw = stored // a corrupt encoding fails as a bad entry
			}
			if !c.add(binary.BigEndian.Uint64(key[2:]), raw) {
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
	return c.finish(cps, witnesses, publicKeyset)
}

// ExportLine is one line of an exported log: an entry, or a checkpoint.
type ExportLine struct {
	*AuditEntry
	Checkpoint *Checkpoint `json:"checkpoint,omitempty"`
}

// VerifyExport checks an exported log (JSON lines from `agentvault audit
// export`) with the checkpoint public key: someone who does not trust the
// server can run it on a copy. Entries must come in order; checkpoint
// lines may come anywhere.
func VerifyExport(r io.Reader, publicKeyset []byte, witnesses ...Checkpoint) (VerifyResult, error) {
	if publicKeyset == nil {
		return VerifyResult{}, errors.New("verifying an export needs the checkpoint public key")
	}
	c := newChainChecker()
	var cps []Checkpoint
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var probe struct {
			Seq        *uint64     `json:"seq"`
			Checkpoint *Checkpoint `json:"checkpoint"`
		}
		if err := json.Unmarshal(line, &probe); err != nil {
			c.res = VerifyResult{OK: false, Entries: c.res.Entries, FirstBadSeq: uint64(len(c.hashes)) + 1, Reason: "a line does not decode"}
			return c.res, nil
		}
		if probe.Checkpoint != nil {
			cps = append(cps, *probe.Checkpoint)
			continue
		}
		seq := uint64(0)
		if probe.Seq != nil {
			seq = *probe.Seq
		}
		if !c.add(seq, bytes.Clone(line)) {
			return c.res, nil
		}
	}
	if err := sc.Err(); err != nil {
		return VerifyResult{}, err
	}
	sort.Slice(cps, func(i, j int) bool { return cps[i].Seq < cps[j].Seq })
	return c.finish(cps, witnesses, publicKeyset)
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
func ExportAudit(ctx context.Context, store *Store, after uint64, w io.Writer) error {
	enc := json.NewEncoder(w)
	err := store.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte("a/"), PrefetchValues: true, PrefetchSize: 256})
		defer it.Close()
		for it.Seek(auditKey(after + 1)); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			// The stored bytes exactly, so the export verifies byte for byte.
			if err := it.Item().Value(func(v []byte) error {
				v, err := entryJSON(v)
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
		if err := enc.Encode(ExportLine{Checkpoint: &cps[i]}); err != nil {
			return err
		}
	}
	return nil
}
