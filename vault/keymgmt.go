package vault

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/agentvault/agentvault/keys"
	"github.com/agentvault/agentvault/storage"
)

// Key usage counters: "kc/<collection>\0<key id, 4 bytes>" holds how many
// stored values that data key encrypted, as 8 bytes. They are kept by the
// single writer in the same transaction as the values, so a key's count is
// exact at every commit: disabling or destroying a key is refused while it
// is above zero.
func keyCountPrefix(coll string) []byte { return []byte("kc/" + coll + "\x00") }

func keyCountKey(coll string, id uint32) []byte {
	return binary.BigEndian.AppendUint32(keyCountPrefix(coll), id)
}

// keyCountsReady marks a database whose counters are complete.
var keyCountsReady = []byte("meta/key-counts-v1")

func readCount(txn storage.Txn, coll string, id uint32) (int64, error) {
	item, err := txn.Get(keyCountKey(coll, id))
	if errors.Is(err, storage.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return decodeCount(item)
}

func decodeCount(item storage.Item) (int64, error) {
	var n int64
	err := item.Value(func(v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("key counter %q: bad length", item.Key())
		}
		n = int64(binary.BigEndian.Uint64(v))
		return nil
	})
	return n, err
}

// keyCounts returns every counter of a collection, by key id.
func keyCounts(txn storage.Txn, coll string) (map[uint32]int64, error) {
	prefix := keyCountPrefix(coll)
	out := map[uint32]int64{}
	it := txn.NewIterator(storage.IterOptions{Prefix: prefix, PrefetchValues: true})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		k := it.Item().Key()
		if len(k) != len(prefix)+4 {
			continue
		}
		n, err := decodeCount(it.Item())
		if err != nil {
			return nil, err
		}
		out[binary.BigEndian.Uint32(k[len(prefix):])] = n
	}
	return out, nil
}

// addKeyCounts applies deltas to a collection's key counters.
func addKeyCounts(txn storage.Txn, coll string, deltas map[uint32]int64) error {
	for id, d := range deltas {
		if d == 0 {
			continue
		}
		n, err := readCount(txn, coll, id)
		if err != nil {
			return err
		}
		n += d
		if n < 0 {
			n = 0
		}
		if err := txn.Set(keyCountKey(coll, id), binary.BigEndian.AppendUint64(nil, uint64(n))); err != nil {
			return err
		}
	}
	return nil
}

// cipherOf returns the ciphertext in a token index entry.
func cipherOf(key, value []byte) ([]byte, string, error) {
	if bytes.HasPrefix(key, []byte("x/")) {
		ref, ok := sharedKeyRef(key)
		if !ok {
			return nil, "", errCorruptRecord
		}
		return value, ref.Collection, nil
	}
	ref, err := decodePointRef(value)
	if err != nil {
		return nil, "", err
	}
	return ref.cipher, ref.Collection, nil
}

// initKeyCounts counts every stored value by collection and key id, once,
// for a database written before the counters existed. It runs before the
// writer starts.
func initKeyCounts(store storage.Store) error {
	done := false
	counts := map[string]map[uint32]int64{}
	err := store.View(func(txn storage.Txn) error {
		if _, err := txn.Get(keyCountsReady); err == nil {
			done = true
			return nil
		}
		for _, prefix := range []string{"t/", "x/"} {
			it := txn.NewIterator(storage.IterOptions{Prefix: []byte(prefix), PrefetchValues: true})
			for it.Rewind(); it.Valid(); it.Next() {
				err := it.Item().Value(func(v []byte) error {
					ct, coll, err := cipherOf(it.Item().Key(), v)
					if err != nil {
						return err
					}
					if id, ok := keys.KeyID(ct); ok {
						if counts[coll] == nil {
							counts[coll] = map[uint32]int64{}
						}
						counts[coll][id]++
					}
					return nil
				})
				if err != nil {
					it.Close()
					return err
				}
			}
			it.Close()
		}
		return nil
	})
	if err != nil || done {
		return err
	}
	txn := store.NewWriteTxn()
	defer txn.Discard()
	for coll, m := range counts {
		for id, n := range m {
			if err := txn.Set(keyCountKey(coll, id), binary.BigEndian.AppendUint64(nil, uint64(n))); err != nil {
				return err
			}
		}
	}
	if err := txn.Set(keyCountsReady, []byte{1}); err != nil {
		return err
	}
	return txn.Commit()
}

// keyMeta is what the keyset itself cannot say: which keys were destroyed
// (their material is gone from it) and when the keyset last changed.
type keyMeta struct {
	Destroyed []DestroyedKey `json:"destroyed,omitempty"`
	RotatedAt *time.Time     `json:"rotated_at,omitempty"`
}

// DestroyedKey is a data key whose material was deleted.
type DestroyedKey struct {
	ID          uint32    `json:"key_id"`
	DestroyedAt time.Time `json:"destroyed_at"`
}

func keyMetaKey(coll string) []byte { return []byte("km/" + coll) }

func readKeyMeta(txn storage.Txn, coll string) (keyMeta, error) {
	var m keyMeta
	item, err := txn.Get(keyMetaKey(coll))
	if errors.Is(err, storage.ErrNotFound) {
		return m, nil
	}
	if err != nil {
		return m, err
	}
	err = item.Value(func(v []byte) error { return json.Unmarshal(v, &m) })
	return m, err
}

func putKeyMeta(txn storage.Txn, coll string, m keyMeta) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return txn.Set(keyMetaKey(coll), b)
}

// KeyStatus is GET /v1/keys: the KEK and every collection's keys.
type KeyStatus struct {
	KEK         KEKStatus        `json:"kek"`
	Collections []CollectionKeys `json:"collections"`
}

// KEKStatus is the KEK as its provider describes it, and which of its
// versions wraps each stored keyset.
type KEKStatus struct {
	keys.KEKInfo
	Wrapped []WrappedKeyset `json:"wrapped"`
}

// WrappedKeyset is one KEK-wrapped keyset in storage.
type WrappedKeyset struct {
	Scope      string `json:"scope"`
	KEKVersion int    `json:"kek_version"`
}

// CollectionKeys are a collection's data keys with the number of stored
// values each protects, and its index (deterministic token) keys.
type CollectionKeys struct {
	Collection   string          `json:"collection"`
	PrimaryKeyID uint32          `json:"primary_key_id"`
	DataKeys     []DataKeyStatus `json:"data_keys"`
	IndexKeys    []keys.KeyInfo  `json:"index_keys"`
	RotatedAt    *time.Time      `json:"rotated_at,omitempty"`
}

// DataKeyStatus is one data key.
type DataKeyStatus struct {
	keys.KeyInfo
	Values      int64      `json:"values"`
	DestroyedAt *time.Time `json:"destroyed_at,omitempty"`
}

// KeyStatus reports the key hierarchy. The KEK's version comes from its
// provider (Vault), so this answers 503 when Vault is down.
func (s *Service) KeyStatus(ctx context.Context) (*KeyStatus, error) {
	info, err := s.keys.KEK().Describe(ctx)
	if err != nil {
		return nil, kmsErr(err)
	}
	out := &KeyStatus{KEK: KEKStatus{KEKInfo: info, Wrapped: []WrappedKeyset{}}, Collections: []CollectionKeys{}}
	wrapped, err := s.wrappedKeysets()
	if err != nil {
		return nil, err
	}
	for _, w := range wrapped {
		ct, err := keys.KEKCiphertext(w.blob)
		v := 0
		if err == nil {
			v = s.keys.KEK().VersionOf(ct)
		}
		out.KEK.Wrapped = append(out.KEK.Wrapped, WrappedKeyset{Scope: w.scope, KEKVersion: v})
	}
	cols, err := s.ListCollections(ctx)
	if err != nil {
		return nil, err
	}
	for _, col := range cols {
		c, err := s.collection(col.Name)
		if err != nil {
			return nil, err
		}
		ck := CollectionKeys{Collection: col.Name, PrimaryKeyID: c.dek().PrimaryID(), IndexKeys: c.index.Keys(), DataKeys: []DataKeyStatus{}}
		err = s.store.View(func(txn storage.Txn) error {
			meta, err := readKeyMeta(txn, col.Name)
			if err != nil {
				return err
			}
			ck.RotatedAt = meta.RotatedAt
			counts, err := keyCounts(txn, col.Name)
			if err != nil {
				return err
			}
			for _, k := range c.dek().Keys() {
				ck.DataKeys = append(ck.DataKeys, DataKeyStatus{KeyInfo: k, Values: counts[k.ID]})
			}
			for _, d := range meta.Destroyed {
				at := d.DestroyedAt
				ck.DataKeys = append(ck.DataKeys, DataKeyStatus{KeyInfo: keys.KeyInfo{ID: d.ID, State: keys.StateDestroyed}, DestroyedAt: &at})
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		out.Collections = append(out.Collections, ck)
	}
	return out, nil
}

type wrappedBlob struct {
	key   string
	scope string
	blob  []byte
}

// wrappedKeysets lists every KEK-wrapped keyset in storage ("k/..."),
// leaving out public keys, which are not wrapped.
func (s *Service) wrappedKeysets() ([]wrappedBlob, error) {
	var out []wrappedBlob
	err := s.store.View(func(txn storage.Txn) error {
		it := txn.NewIterator(storage.IterOptions{Prefix: keysetKey(""), PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := string(it.Item().Key())
			if strings.HasSuffix(k, ".pub") {
				continue
			}
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			out = append(out, wrappedBlob{key: k, scope: strings.TrimPrefix(k, string(keysetKey(""))), blob: v})
		}
		return nil
	})
	return out, err
}

// ErrWrongKEK reports that the KEK unwraps none of the stored keysets.
var ErrWrongKEK = errors.New("the KEK unwraps none of the stored keysets")

// CheckKEK tries the KEK on the stored keysets at start, so a vault opened
// with the wrong KEK (a restored backup without its development KEK file,
// another Transit key) is refused loudly rather than answering 503 on
// every call. The usual case costs one unwrap: it stops at the first
// keyset that unwraps if none before it was refused. It returns nil for an
// empty vault, an ErrKMSUnavailable error if the provider cannot be
// reached, ErrWrongKEK if every keyset is refused, and otherwise the
// scopes that are refused while others unwrap (a KEK version retired too
// early).
func (s *Service) CheckKEK(ctx context.Context) (refused []string, err error) {
	blobs, err := s.wrappedKeysets()
	if err != nil {
		return nil, err
	}
	var (
		first     error // why the first refused keyset was refused
		unwrapped bool
	)
	for _, b := range blobs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		err := s.keys.CheckUnwrap(b.blob, b.scope)
		switch {
		case err == nil && len(refused) == 0:
			return nil, nil
		case err == nil:
			unwrapped = true // go on, to name every refused keyset
		case errors.Is(err, keys.ErrKMSUnavailable):
			if !unwrapped {
				return nil, err
			}
		default:
			if first == nil {
				first = err
			}
			refused = append(refused, b.scope)
		}
	}
	if len(refused) > 0 && !unwrapped {
		// The first refusal says why (a wrong key, or a Vault token that
		// may not decrypt); it carries no key material.
		return refused, fmt.Errorf("%w (%d refused; first: %v)", ErrWrongKEK, len(refused), first)
	}
	return refused, nil
}

// RotateResult says what a rotation did.
type RotateResult struct {
	Target     string        `json:"target"`
	Collection string        `json:"collection,omitempty"`
	KEK        *keys.KEKInfo `json:"kek,omitempty"`
	Rewrapped  int           `json:"rewrapped,omitempty"`
	KeyID      uint32        `json:"key_id,omitempty"`
	PreviousID uint32        `json:"previous_key_id,omitempty"`
}

// RotateKEK rotates the KEK at its provider, then rewraps every stored
// keyset under the new version, each in its own atomic write with an
// audit entry. A failure part-way leaves every keyset readable (old
// versions still unwrap); running it again finishes the job.
func (s *Service) RotateKEK(ctx context.Context, meta RequestMeta) (*RotateResult, error) {
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	info, err := s.keys.KEK().Rotate(ctx)
	if err != nil {
		return nil, kmsErr(err)
	}
	e := s.newEntry(meta, "key.rotate")
	e.Target, e.Reason = "kek", fmt.Sprintf("%s %s now at version %d", info.Provider, info.Key, info.Version)
	if err := s.writer.apply(&mutation{entry: e, size: 1024}); err != nil {
		return nil, err
	}
	s.log.Info("KEK rotated", "provider", info.Provider, "key", info.Key, "version", info.Version, "actor", actorID(meta.Actor))
	n, err := s.rewrapAll(ctx, meta, info.Version)
	if err != nil {
		return nil, err
	}
	return &RotateResult{Target: "kek", KEK: &info, Rewrapped: n}, nil
}

// RewrapAll rewraps every stored keyset not yet under the KEK's current
// version (for example after a rotation done in Vault directly).
func (s *Service) RewrapAll(ctx context.Context, meta RequestMeta) (int, error) {
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	info, err := s.keys.KEK().Describe(ctx)
	if err != nil {
		return 0, kmsErr(err)
	}
	return s.rewrapAll(ctx, meta, info.Version)
}

func (s *Service) rewrapAll(ctx context.Context, meta RequestMeta, version int) (int, error) {
	blobs, err := s.wrappedKeysets()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, b := range blobs {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		if ct, err := keys.KEKCiphertext(b.blob); err == nil && s.keys.KEK().VersionOf(ct) == version {
			continue // already under the current version
		}
		nb, err := s.keys.Rewrap(b.blob, b.scope)
		if err != nil {
			return n, kmsErr(err)
		}
		e := s.newEntry(meta, "key.rewrap")
		e.Target, e.Reason = b.scope, fmt.Sprintf("wrapped under KEK version %d", version)
		key, old := b.key, b.blob
		err = s.writer.apply(&mutation{entry: e, size: len(nb) + 512, prepare: func(txn storage.Txn) error {
			cur, err := getValue(txn, []byte(key))
			if err != nil {
				return err
			}
			if !bytes.Equal(cur, old) {
				return reject(conflict("keyset_changed", "keyset %s changed during the rewrap; run the rotation again", key))
			}
			return txn.Set([]byte(key), nb)
		}})
		if err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// RotateDEK adds a new primary data key to a collection's keyset. New
// values are encrypted with it at once; values under older keys still
// decrypt until they are re-encrypted and the old keys retired. The index
// keyset (deterministic tokens) is not rotated: that would change every
// deterministic token.
func (s *Service) RotateDEK(ctx context.Context, meta RequestMeta, coll string) (*RotateResult, error) {
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	c, err := s.collection(coll)
	if err != nil {
		return nil, err
	}
	old := c.dek()
	nk, id, err := old.Rotate()
	if err != nil {
		return nil, err
	}
	wrapped, err := s.keys.WrapDataKey(nk, dekScope(coll))
	if err != nil {
		return nil, kmsErr(err)
	}
	now := s.now()
	e := s.newEntry(meta, "key.rotate")
	e.Collection, e.Target = coll, dekScope(coll)
	e.Reason = fmt.Sprintf("new primary data key %d (was %d)", id, old.PrimaryID())
	err = s.writer.apply(&mutation{entry: e, size: len(wrapped) + 1024, prepare: func(txn storage.Txn) error {
		m, err := readKeyMeta(txn, coll)
		if err != nil {
			return err
		}
		m.RotatedAt = &now
		if err := putKeyMeta(txn, coll, m); err != nil {
			return err
		}
		if err := bumpGen(txn); err != nil {
			return err
		}
		return txn.Set(dekKey(coll), wrapped)
	}})
	if err != nil {
		return nil, err
	}
	c.setDEK(nk, wrapped)
	s.log.Info("data key rotated", "collection", coll, "key_id", id, "previous_key_id", old.PrimaryID(), "actor", actorID(meta.Actor))
	return &RotateResult{Target: "dek", Collection: coll, KeyID: id, PreviousID: old.PrimaryID()}, nil
}

// DisableKey disables an old data key: it stays in the keyset but no
// longer decrypts. DestroyKey deletes its material from the keyset for
// good. Both are refused for the primary key and while any stored value
// still uses the key (re-encrypt first).
func (s *Service) DisableKey(ctx context.Context, meta RequestMeta, coll string, id uint32) error {
	return s.retireKey(ctx, meta, coll, id, false)
}

// DestroyKey: see DisableKey.
func (s *Service) DestroyKey(ctx context.Context, meta RequestMeta, coll string, id uint32) error {
	return s.retireKey(ctx, meta, coll, id, true)
}

func (s *Service) retireKey(ctx context.Context, meta RequestMeta, coll string, id uint32, destroy bool) error {
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	c, err := s.collection(coll)
	if err != nil {
		return err
	}
	cur := c.dek()
	var info *keys.KeyInfo
	for _, k := range cur.Keys() {
		if k.ID == id {
			info = &k
		}
	}
	if info == nil {
		var m keyMeta
		if err := s.store.View(func(txn storage.Txn) (err error) { m, err = readKeyMeta(txn, coll); return err }); err != nil {
			return err
		}
		if slices.ContainsFunc(m.Destroyed, func(d DestroyedKey) bool { return d.ID == id }) {
			return conflict("key_destroyed", "key %d of collection %q is already destroyed", id, coll)
		}
		return notFound("key_not_found", "collection %q has no data key %d", coll, id)
	}
	if info.Primary {
		return conflict("key_is_primary", "key %d is the primary key of collection %q; rotate first", id, coll)
	}
	if !destroy && info.State == keys.StateDisabled {
		return conflict("key_disabled", "key %d of collection %q is already disabled", id, coll)
	}
	action, nk := "key.disable", cur
	if info.State == keys.StateEnabled {
		if nk, err = cur.Disable(id); err != nil {
			return err
		}
	}
	if destroy {
		action = "key.destroy"
		if nk, err = nk.Destroy(id); err != nil {
			return err
		}
	}
	wrapped, err := s.keys.WrapDataKey(nk, dekScope(coll))
	if err != nil {
		return kmsErr(err)
	}
	now := s.now()
	e := s.newEntry(meta, action)
	e.Collection, e.Target = coll, fmt.Sprintf("%s key %d", dekScope(coll), id)
	err = s.writer.apply(&mutation{entry: e, size: len(wrapped) + 1024, prepare: func(txn storage.Txn) error {
		n, err := readCount(txn, coll, id)
		if err != nil {
			return err
		}
		if n > 0 {
			return reject(conflict("key_in_use", "%d stored values of collection %q still use key %d; re-encrypt them first", n, coll, id))
		}
		// From here on, a write that encrypted under this key before the
		// rotation is refused in the writer rather than stored unreadable.
		c.retired.Store(id, true)
		if destroy {
			m, err := readKeyMeta(txn, coll)
			if err != nil {
				return err
			}
			m.Destroyed = append(m.Destroyed, DestroyedKey{ID: id, DestroyedAt: now})
			if err := putKeyMeta(txn, coll, m); err != nil {
				return err
			}
			if err := txn.Delete(keyCountKey(coll, id)); err != nil {
				return err
			}
		}
		if err := bumpGen(txn); err != nil {
			return err
		}
		return txn.Set(dekKey(coll), wrapped)
	}})
	if err != nil {
		return err
	}
	c.setDEK(nk, wrapped)
	s.log.Info("data key retired", "action", action, "collection", coll, "key_id", id, "actor", actorID(meta.Actor))
	return nil
}
