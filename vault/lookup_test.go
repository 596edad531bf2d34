package vault

import (
	"encoding/json"
	"errors"

	"github.com/agentvault/agentvault/storage"
	"github.com/agentvault/agentvault/tokenizer"
)

// Test helpers that read what a token stands for straight from the store,
// with no grant and no audit entry: tests use them to look behind the
// service. Detokenize is the only way a token is revealed in the vault.

// errTokenNotFound is returned for tokens that never existed and for
// tokens whose records were deleted alike, so the answer is no oracle.
var errTokenNotFound = notFound("token_not_found", "token not found")

// resolveToken finds the records a token stands for, with their
// ciphertexts: one point lookup for random and format-preserving tokens,
// a prefix scan on an open iterator (one per request) for deterministic
// ones.
func resolveToken(txn storage.Txn, it storage.Iterator, token string) ([]TokenRef, error) {
	if !isShared(token) {
		item, err := txn.Get(pointTokenKey(token))
		if errors.Is(err, storage.ErrNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		var ref TokenRef
		if err := item.Value(func(v []byte) (err error) { ref, err = decodePointRef(v); return err }); err != nil {
			return nil, err
		}
		return []TokenRef{ref}, nil
	}
	prefix := tokenIndexPrefix(token)
	var refs []TokenRef
	for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
		ref, ok := sharedKeyRef(it.Item().Key())
		if !ok {
			continue
		}
		var err error
		if ref.cipher, err = it.Item().ValueCopy(nil); err != nil {
			return nil, err
		}
		refs = append(refs, ref)
	}
	return refs, nil
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
	err := s.store.View(func(txn storage.Txn) error {
		it := txn.NewIterator(storage.IterOptions{PrefetchValues: false})
		defer it.Close()
		refs, err := resolveToken(txn, it, token)
		if err != nil {
			return err
		}
		if len(refs) == 0 {
			return errTokenNotFound
		}
		ref = refs[0]
		val, err = s.decryptField(ref)
		return err
	})
	return ref, val, err
}
