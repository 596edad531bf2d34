package vault

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/tink-crypto/tink-go/v2/tink"

	"github.com/agentvault/agentvault/keys"
)

// Checkpoint is a signed statement of the audit chain's head: entry Seq
// has hash Hash. Entries up to a checkpoint cannot be changed without the
// signature failing to match, even by someone who can rewrite the
// database. Checkpoints are stored beside the log, where that same person
// could delete the newest together with the entries they cover; so each
// is also shipped out as it is made (a log line, and the webhook's
// audit.checkpoint event), and a verifier holds the log to checkpoints
// saved outside (witnesses): a log that no longer holds a witnessed entry
// with the same hash was cut or rewritten.
type Checkpoint struct {
	Seq       uint64    `json:"seq"`
	Hash      string    `json:"hash"`
	Time      time.Time `json:"time"`
	Signature []byte    `json:"signature"`
}

const (
	signingScope   = "audit/checkpoint-signing"
	signingPubKey  = "k/audit/checkpoint-signing.pub"
	checkpointPfx  = "ac/"
	checkpointMsgV = "agentvault-audit-checkpoint/v1"
)

func checkpointKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte(checkpointPfx), seq)
}

// signedMessage is what a checkpoint's signature covers.
func (c *Checkpoint) signedMessage() []byte {
	return []byte(checkpointMsgV + "\n" + strconv.FormatUint(c.Seq, 10) + "\n" + c.Hash + "\n" + c.Time.UTC().Format(time.RFC3339Nano))
}

// signer returns the checkpoint signing key, creating it (private part
// wrapped by the KEK, public part stored in the clear) on first use.
func (s *Service) signer() (*keys.SigningKey, error) {
	if k := s.signKey.Load(); k != nil {
		return k, nil
	}
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	if k := s.signKey.Load(); k != nil {
		return k, nil
	}
	wrapped, err := s.storedKeyset(signingScope)
	if err != nil {
		return nil, err
	}
	var k *keys.SigningKey
	if wrapped != nil {
		if k, err = s.keys.OpenSigningKey(wrapped, signingScope); err != nil {
			return nil, kmsErr(err)
		}
	} else {
		if k, err = s.keys.NewSigningKey(); err != nil {
			return nil, err
		}
		if wrapped, err = s.keys.WrapSigningKey(k, signingScope); err != nil {
			return nil, kmsErr(err)
		}
		pub, err := k.PublicKeyset()
		if err != nil {
			return nil, err
		}
		if err := s.storeNewKeyset(signingScope, wrapped, map[string][]byte{signingPubKey: pub}); err != nil {
			return nil, err
		}
	}
	s.signKey.Store(k)
	return k, nil
}

// AuditPublicKey returns the checkpoint public keyset (Tink JSON), for
// people who check exported logs without trusting the server.
func (s *Service) AuditPublicKey(ctx context.Context) ([]byte, error) {
	k, err := s.signer()
	if err != nil {
		return nil, err
	}
	return k.PublicKeyset()
}

// StoredAuditPublicKey reads the checkpoint public keyset from a stopped
// server's data directory, without the KEK.
func StoredAuditPublicKey(store *Store) ([]byte, error) {
	var pub []byte
	err := store.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(signingPubKey))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return notFound("no_signing_key", "no checkpoint has been signed yet")
		}
		if err != nil {
			return err
		}
		pub, err = item.ValueCopy(nil)
		return err
	})
	return pub, err
}

// Checkpoint signs the current head of the chain, unless the last
// checkpoint already covers it. It returns the checkpoint that covers the
// head.
func (s *Service) Checkpoint(ctx context.Context) (*Checkpoint, error) {
	k, err := s.signer() // may append its own key.create entry: do it first
	if err != nil {
		return nil, err
	}
	s.cpMu.Lock()
	defer s.cpMu.Unlock()
	head, err := readHead(s.store)
	if err != nil {
		return nil, err
	}
	last, err := lastCheckpoint(s.store)
	if err != nil {
		return nil, err
	}
	if last != nil && last.Seq >= head.Seq {
		return last, nil
	}
	if head.Seq == 0 {
		return nil, nil
	}
	cp := &Checkpoint{Seq: head.Seq, Hash: head.Hash, Time: s.now()}
	if cp.Signature, err = k.Sign(cp.signedMessage()); err != nil {
		return nil, fmt.Errorf("sign checkpoint: %w", err)
	}
	b, _ := json.Marshal(cp)
	if err := s.store.updateSmall(ctx, func(txn *badger.Txn) error { return txn.Set(checkpointKey(cp.Seq), b) }); err != nil {
		return nil, err
	}
	// Shipped out as made, so a copy exists outside the box: the whole
	// checkpoint on one log line (audit verify --since-checkpoint reads
	// it back), and to the webhook if one is set.
	s.log.Info("audit checkpoint", "seq", cp.Seq, "hash", cp.Hash, "checkpoint", string(b))
	if s.cfg.OnCheckpoint != nil {
		s.cfg.OnCheckpoint(*cp)
	}
	return cp, nil
}

func lastCheckpoint(store *Store) (*Checkpoint, error) {
	var cp *Checkpoint
	err := store.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Reverse: true, Prefix: []byte(checkpointPfx)})
		defer it.Close()
		it.Seek(checkpointKey(^uint64(0)))
		if !it.Valid() {
			return nil
		}
		cp = &Checkpoint{}
		return it.Item().Value(func(v []byte) error { return json.Unmarshal(v, cp) })
	})
	return cp, err
}

// Checkpoints returns every stored checkpoint in order.
func Checkpoints(store *Store) ([]Checkpoint, error) {
	var out []Checkpoint
	err := store.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(checkpointPfx), PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var cp Checkpoint
			if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &cp) }); err != nil {
				return fmt.Errorf("decode checkpoint: %w", err)
			}
			out = append(out, cp)
		}
		return nil
	})
	return out, err
}

// checkCheckpoints checks each checkpoint's signature and that the chain
// (hashes by seq, as verified) holds the entry it signed: first those
// stored beside the log, then the witnesses saved outside it. A checkpoint
// past the end of the log means the tail was cut off. It then says how
// far the head is past the newest checkpoint of either kind: the entries
// no signature covers yet.
func checkCheckpoints(res *VerifyResult, hashes []string, cps, witnesses []Checkpoint, verifier tink.Verifier) {
	check := func(cp Checkpoint, what string) bool {
		fail := func(first uint64, format string, args ...any) bool {
			*res = VerifyResult{OK: false, Entries: res.Entries, FirstBadSeq: first, Reason: fmt.Sprintf(format, args...)}
			return false
		}
		if verifier != nil {
			if err := verifier.Verify(cp.Signature, cp.signedMessage()); err != nil {
				return fail(cp.Seq, "%s at entry %d has a bad signature", what, cp.Seq)
			}
		}
		if cp.Seq == 0 || cp.Seq > uint64(len(hashes)) {
			return fail(uint64(len(hashes))+1, "the log ends at entry %d but %s covers entry %d: the tail was cut off", len(hashes), what, cp.Seq)
		}
		if hashes[cp.Seq-1] != cp.Hash {
			return fail(cp.Seq, "entry %d differs from the one %s signed", cp.Seq, what)
		}
		res.LastCheckpoint = max(res.LastCheckpoint, cp.Seq)
		return true
	}
	for _, cp := range cps {
		if !check(cp, "a signed checkpoint") {
			return
		}
		res.Checkpoints++
	}
	for _, cp := range witnesses {
		if !check(cp, "a checkpoint saved outside the database") {
			return
		}
		res.Witnessed++
	}
	res.UnsignedEntries = res.Entries - res.LastCheckpoint
}

// ParseCheckpoints reads checkpoints saved outside the database: one per
// line (or one JSON document), each a checkpoint object, an export line
// ({"checkpoint": {...}}), a webhook event ({"type": "audit.checkpoint",
// "data": {...}}) or a JSON log line of the server's ("checkpoint": "<the
// checkpoint as JSON>"). Other lines are skipped; none found is an error.
func ParseCheckpoints(r io.Reader) ([]Checkpoint, error) {
	var out []Checkpoint
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if cp, ok := parseCheckpointLine(sc.Bytes()); ok {
			out = append(out, cp)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errors.New("no checkpoint found (want lines holding a checkpoint: seq, hash, time, signature)")
	}
	return out, nil
}

func parseCheckpointLine(line []byte) (Checkpoint, bool) {
	var probe struct {
		Wrapped json.RawMessage `json:"checkpoint"`
		Type    string          `json:"type"`
		Data    json.RawMessage `json:"data"`
	}
	if json.Unmarshal(line, &probe) != nil {
		return Checkpoint{}, false
	}
	doc := line
	switch {
	case probe.Type != "":
		if probe.Type != "audit.checkpoint" {
			return Checkpoint{}, false
		}
		doc = probe.Data
	case len(probe.Wrapped) > 0 && probe.Wrapped[0] == '"':
		var s string
		if json.Unmarshal(probe.Wrapped, &s) != nil {
			return Checkpoint{}, false
		}
		doc = []byte(s)
	case len(probe.Wrapped) > 0:
		doc = probe.Wrapped
	}
	var cp Checkpoint
	if json.Unmarshal(doc, &cp) != nil {
		return Checkpoint{}, false
	}
	return cp, cp.Seq > 0 && cp.Hash != "" && len(cp.Signature) > 0
}
