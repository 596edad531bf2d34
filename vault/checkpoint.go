package vault

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/tink-crypto/tink-go/v2/tink"

	"github.com/agentvault/agentvault/keys"
)

// Checkpoint is a signed statement of the audit chain's head: entry Seq
// has hash Hash. Entries up to a checkpoint cannot be removed or changed
// without the signature failing to match, even by someone who can rewrite
// the database; only entries after the last checkpoint could be cut off
// unnoticed, so checkpoints are made often (every --audit-checkpoint-every)
// and at every clean shutdown.
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
	if err := s.store.Update(ctx, func(txn *badger.Txn) error { return txn.Set(checkpointKey(cp.Seq), b) }); err != nil {
		return nil, err
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
// (hashes by seq, as verified) holds the entry it signed. A checkpoint past
// the end of the log means the tail was cut off.
func checkCheckpoints(res *VerifyResult, hashes []string, cps []Checkpoint, verifier tink.Verifier) {
	for _, cp := range cps {
		if verifier != nil {
			if err := verifier.Verify(cp.Signature, cp.signedMessage()); err != nil {
				*res = VerifyResult{OK: false, Entries: res.Entries, FirstBadSeq: cp.Seq, Reason: fmt.Sprintf("checkpoint at entry %d has a bad signature", cp.Seq)}
				return
			}
		}
		if cp.Seq > uint64(len(hashes)) {
			*res = VerifyResult{OK: false, Entries: res.Entries, FirstBadSeq: uint64(len(hashes)) + 1,
				Reason: fmt.Sprintf("the log ends at entry %d but a signed checkpoint covers entry %d: the tail was cut off", len(hashes), cp.Seq)}
			return
		}
		if hashes[cp.Seq-1] != cp.Hash {
			*res = VerifyResult{OK: false, Entries: res.Entries, FirstBadSeq: cp.Seq, Reason: fmt.Sprintf("entry %d differs from the one the checkpoint signed", cp.Seq)}
			return
		}
		res.Checkpoints++
	}
}
