package vault

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/agentvault/agentvault/storage"
)

// TokenRef says where a token's value lives, with its ciphertext.
type TokenRef struct {
	Collection string
	RecordID   string
	Field      string
	cipher     []byte
}

// decryptField opens a token's ciphertext with its collection's DEK, bound
// to the collection, record and field it was stored for.
func (s *Service) decryptField(ref TokenRef) (json.RawMessage, error) {
	return s.decryptFieldIn(nil, ref)
}

// decryptFieldIn is decryptField for a caller inside txn (see
// collectionIn).
func (s *Service) decryptFieldIn(txn storage.Txn, ref TokenRef) (json.RawMessage, error) {
	c, err := s.collectionIn(txn, ref.Collection)
	if err != nil {
		return nil, err
	}
	pt, err := c.dek().Decrypt(ref.cipher, fieldAD(ref.Collection, ref.RecordID, ref.Field))
	if err != nil {
		return nil, fmt.Errorf("decrypt %s/%s field %q: %w", ref.Collection, ref.RecordID, ref.Field, err)
	}
	return pt, nil
}

// lookupPoint reads a random or format-preserving token's place and
// ciphertext: one point lookup.
func lookupPoint(txn storage.Txn, token string) (TokenRef, bool, error) {
	item, err := txn.Get(pointTokenKey(token))
	if errors.Is(err, storage.ErrNotFound) {
		return TokenRef{}, false, nil
	}
	if err != nil {
		return TokenRef{}, false, err
	}
	var ref TokenRef
	err = item.Value(func(v []byte) (err error) { ref, err = decodePointRef(v); return err })
	return ref, err == nil, err
}

// firstShared reads the first place a deterministic token stands for: one
// seek, however many records share the value. A deterministic token is
// computed from its field's name and the value under its collection's key,
// so every place it stands for is in that one collection and field.
func firstShared(it storage.Iterator, token string) (TokenRef, bool, error) {
	prefix := tokenIndexPrefix(token)
	it.Seek(prefix)
	if !it.ValidForPrefix(prefix) {
		return TokenRef{}, false, nil
	}
	ref, ok := sharedKeyRef(it.Item().Key())
	if !ok {
		return TokenRef{}, false, errCorruptRecord
	}
	var err error
	ref.cipher, err = it.Item().ValueCopy(nil)
	return ref, err == nil, err
}

// lookupAt reads the token's value at one named place: a point lookup for
// every kind of token. It reports false when the token does not stand for
// that place (any more).
func lookupAt(txn storage.Txn, token, collection, id, field string) (TokenRef, bool, error) {
	if !isShared(token) {
		ref, ok, err := lookupPoint(txn, token)
		if err != nil || !ok || ref.Collection != collection || ref.RecordID != id || ref.Field != field {
			return TokenRef{}, false, err
		}
		return ref, true, nil
	}
	item, err := txn.Get(tokenIndexKey(token, collection, id, field))
	if errors.Is(err, storage.ErrNotFound) {
		return TokenRef{}, false, nil
	}
	if err != nil {
		return TokenRef{}, false, err
	}
	ref := TokenRef{Collection: collection, RecordID: id, Field: field}
	if ref.cipher, err = item.ValueCopy(nil); err != nil {
		return TokenRef{}, false, err
	}
	return ref, true, nil
}
