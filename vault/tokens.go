package vault

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"github.com/agentvault/agentvault/tokenizer"
)

// TokenRef says where a token's value lives.
type TokenRef struct {
	Collection string
	RecordID   string
	Field      string
}

// errTokenNotFound is returned for tokens that never existed and for
// tokens whose records were deleted alike, so the answer is no oracle.
var errTokenNotFound = notFound("token_not_found", "token not found")

// resolveToken finds the records a token stands for, using an open
// iterator (one per request, so a batch costs one iterator).
func resolveToken(it *badger.Iterator, token string) []TokenRef {
	prefix := tokenIndexPrefix(token)
	var refs []TokenRef
	for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
		rest := it.Item().Key()[len(prefix):]
		parts := bytes.SplitN(rest, []byte{0}, 3)
		if len(parts) != 3 {
			continue
		}
		refs = append(refs, TokenRef{Collection: string(parts[0]), RecordID: string(parts[1]), Field: string(parts[2])})
	}
	return refs
}

// decryptField reads a record's field ciphertext and opens it.
func (s *Service) decryptField(txn *badger.Txn, ref TokenRef) (json.RawMessage, error) {
	c, err := s.collection(ref.Collection)
	if err != nil {
		return nil, err
	}
	item, err := txn.Get(recordKey(ref.Collection, ref.RecordID))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, errTokenNotFound
	}
	if err != nil {
		return nil, err
	}
	var sr storedRecord
	if err := item.Value(func(v []byte) (err error) { sr, err = decodeRecord(v); return err }); err != nil {
		return nil, fmt.Errorf("decode record %s: %w", ref.RecordID, err)
	}
	f, ok := sr.field(ref.Field)
	if !ok || f.Cipher == nil {
		return nil, errTokenNotFound
	}
	pt, err := c.dek.Decrypt(f.Cipher, fieldAD(ref.Collection, ref.RecordID, ref.Field))
	if err != nil {
		return nil, fmt.Errorf("decrypt %s/%s field %q: %w", ref.Collection, ref.RecordID, ref.Field, err)
	}
	return pt, nil
}

// lookupValue resolves one token to its first record and plaintext. It is
// the core of detokenization, without any authorisation: callers decide
// first whether the value may be revealed.
func (s *Service) lookupValue(token string) (TokenRef, json.RawMessage, error) {
	if _, err := tokenizer.ParseToken(token); err != nil {
		return TokenRef{}, nil, errTokenNotFound
	}
	var ref TokenRef
	var val json.RawMessage
	err := s.store.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: false})
		defer it.Close()
		refs := resolveToken(it, token)
		if len(refs) == 0 {
			return errTokenNotFound
		}
		ref = refs[0]
		var err error
		val, err = s.decryptField(txn, ref)
		return err
	})
	return ref, val, err
}
