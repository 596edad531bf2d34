package vault

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/agentvault/agentvault/keys"
	"github.com/agentvault/agentvault/storage"
)

const (
	signingScope  = "audit/checkpoint-signing"
	signingPubKey = "k/audit/checkpoint-signing.pub"
	checkpointPfx = "ac/"
)

func checkpointKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte(checkpointPfx), seq)
}

// signer returns the checkpoint signing key, creating it (private part
// wrapped by the KEK, public part stored in the clear) on first use.
func (s *Service) signer() (*keys.SigningKey, error) {
	if k := s.signKey.Load(); k != nil {
		return k, nil
	}
	// Read before taking loadMu: no one waits for the store holding it
	// (see collectionIn).
	wrapped, err := s.storedKeyset(signingScope)
	if err != nil {
		return nil, err
	}
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	if k := s.signKey.Load(); k != nil {
		return k, nil
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
func StoredAuditPublicKey(store storage.Store) ([]byte, error) {
	var pub []byte
	err := store.View(func(txn storage.Txn) error {
		item, err := txn.Get([]byte(signingPubKey))
		if errors.Is(err, storage.ErrNotFound) {
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
	if cp.Signature, err = k.Sign(cp.SignedMessage()); err != nil {
		return nil, fmt.Errorf("sign checkpoint: %w", err)
	}
	b, _ := json.Marshal(cp)
	if err := s.store.Update(ctx, true, func(txn storage.Txn) error { return txn.Set(checkpointKey(cp.Seq), b) }); err != nil {
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

func lastCheckpoint(store storage.Store) (*Checkpoint, error) {
	var cp *Checkpoint
	err := store.View(func(txn storage.Txn) error {
		it := txn.NewIterator(storage.IterOptions{Reverse: true, Prefix: []byte(checkpointPfx), PrefetchValues: true, PrefetchSize: 1})
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
func Checkpoints(store storage.Store) ([]Checkpoint, error) {
	var out []Checkpoint
	err := store.View(func(txn storage.Txn) error {
		it := txn.NewIterator(storage.IterOptions{Prefix: []byte(checkpointPfx), PrefetchValues: true})
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
