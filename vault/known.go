package vault

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"strings"
	"sync"

	"github.com/google/uuid"

	"github.com/agentvault/agentvault/detect"
	"github.com/agentvault/agentvault/keys"
	"github.com/agentvault/agentvault/storage"
)

// Known values. A sensitive field marked "detect" (string values,
// deterministic tokens) is found in free text by exact match of its
// normalized form (detect.Normalize), without decrypting anything: each
// record's value keeps a keyed hash of that form (AES-CMAC under a
// vault-wide keyset wrapped by the KEK), and redaction hashes each span of
// one to eight words of the text and looks it up in an in-memory set of
// those hashes, so its cost does not grow with the number of values held.
// A hit is confirmed in the store, where the hash leads to the fields and
// records holding the value and to the field's deterministic token, which
// is what the mention is replaced with: restoring it is detokenizing that
// token, under grants on the field the value came from.
//
// Stored per record and detect field:
//
//	kd/<hash 16><words 1>/<collection>\0<field>\0<record> -> deterministic token
//	kr/<collection>\0<record>\0<field>                    -> <hash 16><words 1>
//
// The second finds the first when the value changes or the record goes.

const (
	knownScope   = "detect/known-values"
	knownHashLen = 16
)

func knownKey(h []byte, words int, coll, field, id string) []byte {
	k := make([]byte, 0, 3+knownHashLen+2+len(coll)+len(field)+len(id)+2)
	k = append(k, "kd/"...)
	k = append(k, h...)
	k = append(k, byte(words), '/')
	return append(k, coll+"\x00"+field+"\x00"+id...)
}

func knownRefKey(coll, id, field string) []byte {
	return []byte("kr/" + coll + "\x00" + id + "\x00" + field)
}

// knownEntry is one stored kd key, parsed.
type knownEntry struct {
	hash            []byte
	words           int
	coll, field, id string
}

func parseKnownKey(k []byte) (knownEntry, bool) {
	rest, ok := bytes.CutPrefix(k, []byte("kd/"))
	if !ok || len(rest) < knownHashLen+2 || rest[knownHashLen+1] != '/' {
		return knownEntry{}, false
	}
	e := knownEntry{hash: rest[:knownHashLen], words: int(rest[knownHashLen])}
	parts := strings.Split(string(rest[knownHashLen+2:]), "\x00")
	if len(parts) != 3 || e.words < 1 || e.words > detect.MaxKnownWords {
		return knownEntry{}, false
	}
	e.coll, e.field, e.id = parts[0], parts[1], parts[2]
	return e, true
}

// knownSet is the in-memory set of the hashes stored, by their first
// eight bytes, each with the number of entries holding it, and how many
// values have each word count. It only filters: a hit is confirmed in the
// store, so a stale member costs a lookup, never a wrong answer.
type knownSet struct {
	mu    sync.RWMutex
	set   map[uint64]int32
	words [detect.MaxKnownWords + 1]int64
	// bits is a filter in front of the map: a bit per hash, set when the
	// hash is added and never cleared (a stale bit costs a map lookup). At
	// 2 MiB it stays in the processor's cache where a map of a million
	// hashes does not, so a miss costs the same with 1,000 values or
	// 1,000,000.
	bits []uint64
}

const knownFilterBits = 1 << 24

func setKey(h []byte) uint64 { return binary.LittleEndian.Uint64(h) }

// filterBit is the filter's bit for a hash: bytes 8 to 11, not the map's
// key, so the filter and the map fail independently.
func filterBit(h []byte) uint32 { return binary.LittleEndian.Uint32(h[8:]) % knownFilterBits }

func (k *knownSet) change(h []byte, words int, delta int32) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.set == nil {
		k.set = map[uint64]int32{}
		k.bits = make([]uint64, knownFilterBits/64)
	}
	if delta > 0 {
		b := filterBit(h)
		k.bits[b/64] |= 1 << (b % 64)
	}
	key := setKey(h)
	// Changes land after their commits, in any order: a count may dip
	// below zero for a moment and is kept until it is back to zero.
	if n := k.set[key] + delta; n == 0 {
		delete(k.set, key)
	} else {
		k.set[key] = n
	}
	k.words[words] += int64(delta)
}

func (k *knownSet) has(h []byte) bool {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.bits == nil {
		return false
	}
	if b := filterBit(h); k.bits[b/64]&(1<<(b%64)) == 0 {
		return false
	}
	return k.set[setKey(h)] > 0
}

func (k *knownSet) hasWords(n int) bool {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.words[n] > 0
}

func (k *knownSet) size() int {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return len(k.set)
}

// load fills the set from the store's kd keys, replacing what it held.
func (k *knownSet) load(store storage.Store) error {
	var fresh knownSet
	err := store.View(func(txn storage.Txn) error {
		it := txn.NewIterator(storage.IterOptions{Prefix: []byte("kd/")})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			e, ok := parseKnownKey(it.Item().Key())
			if !ok {
				return errors.New("corrupt known-value key")
			}
			fresh.change(e.hash, e.words, 1)
		}
		return nil
	})
	if err != nil {
		return err
	}
	k.mu.Lock()
	k.set, k.words, k.bits = fresh.set, fresh.words, fresh.bits
	k.mu.Unlock()
	return nil
}

// knownGenKey changes with every write of a known-value entry, so nodes
// sharing the store know to load the set again (pollKnown).
var knownGenKey = []byte("meta/gen-known")

// pollKnown loads the known set again if another write (on any node)
// changed the entries since the last look: values held on other nodes are
// found within a poll.
func (s *Service) pollKnown() error {
	var gen []byte
	err := s.store.View(func(txn storage.Txn) error {
		item, err := txn.Get(knownGenKey)
		if errors.Is(err, storage.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		gen, err = item.ValueCopy(nil)
		return err
	})
	if err != nil || bytes.Equal(gen, s.knownGen) {
		return err
	}
	if err := s.known.load(s.store); err != nil {
		return err
	}
	s.knownGen = gen
	return nil
}

// knownChange is a known value added or removed by a write, applied to the
// set once the write is committed.
type knownChange struct {
	hash  []byte
	words int
	delta int32
}

func (s *Service) applyKnown(changes []knownChange) {
	for _, c := range changes {
		s.known.change(c.hash, c.words, c.delta)
	}
}

// knownHash is a value's keyed hash for detection, and its word count; nil
// if the value is not one detection can match (no word, too long).
func knownHash(k *keys.IndexKey, value string) ([]byte, int, error) {
	norm, ok := detect.Normalize(value)
	if !ok {
		return nil, 0, nil
	}
	h, err := k.Compute([]byte(norm), knownHashLen)
	return h, strings.Count(norm, " ") + 1, err
}

// detectKey returns the vault-wide keyset for known-value hashes, creating
// it (wrapped by the KEK) on first use.
func (s *Service) detectKey() (*keys.IndexKey, error) {
	return s.vaultPRF(knownScope, &s.knownPRF, s.keys.NewDetectKey)
}

// setKnown stores a detect field's hash entries for a record.
func setKnown(txn storage.Txn, coll, id string, pf *preparedField) error {
	if pf.known == nil {
		return nil
	}
	ref := append(slices.Clone(pf.known), byte(pf.knownWords))
	if err := txn.Set(knownRefKey(coll, id, pf.field.Name), ref); err != nil {
		return err
	}
	if err := txn.Set(knownGenKey, []byte(uuid.NewString())); err != nil {
		return err
	}
	return txn.Set(knownKey(pf.known, pf.knownWords, coll, pf.field.Name, id), []byte(pf.token))
}

// dropKnown removes a record field's hash entries, if it has any, and
// reports the change for the set.
func dropKnown(txn storage.Txn, coll, id, field string) (*knownChange, error) {
	rk := knownRefKey(coll, id, field)
	ref, err := getValue(txn, rk)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return nil, nil
	case err != nil:
		return nil, err
	case len(ref) != knownHashLen+1:
		return nil, errors.New("corrupt known-value reference")
	}
	h, words := ref[:knownHashLen], int(ref[knownHashLen])
	if err := txn.Delete(knownKey(h, words, coll, field, id)); err != nil {
		return nil, err
	}
	if err := txn.Set(knownGenKey, []byte(uuid.NewString())); err != nil {
		return nil, err
	}
	return &knownChange{hash: h, words: words, delta: -1}, txn.Delete(rk)
}

// knownMatcher is one redaction's view of the known values: detect.Known
// over the set, with hits confirmed in the store and limited to what the
// caller may see (knownVisibility), so redaction tells no caller that the vault
// holds a value it could not read.
type knownMatcher struct {
	s       *Service
	key     *keys.IndexKey
	visible func(e knownEntry) bool
	hits    map[string]knownHit // by normalized form
	err     error               // the first failure: the redaction fails with it
}

type knownHit struct {
	typ, token string
}

func (m *knownMatcher) HasWords(n int) bool { return m.s.known.hasWords(n) }

func (m *knownMatcher) Lookup(norm []byte) (string, bool) {
	if hit, ok := m.hits[string(norm)]; ok {
		return hit.typ, hit.typ != ""
	}
	h, err := m.key.Compute(norm, knownHashLen)
	if err != nil {
		m.err = err
		return "", false
	}
	if !m.s.known.has(h) {
		return "", false
	}
	var hit knownHit
	err = m.s.store.View(func(txn storage.Txn) error {
		prefix := append([]byte("kd/"), h...)
		it := txn.NewIterator(storage.IterOptions{Prefix: prefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			e, ok := parseKnownKey(it.Item().Key())
			if !ok || !m.visible(e) {
				continue
			}
			tok, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			hit = knownHit{typ: e.coll + "." + e.field, token: string(tok)}
			return nil
		}
		return nil
	})
	if err != nil {
		m.err = err
		return "", false
	}
	m.hits[string(norm)] = hit
	return hit.typ, hit.typ != ""
}

// knownMatcher returns the caller's matcher, or nil when the vault holds
// no known values.
func (s *Service) knownMatcher(actor *Principal) (*knownMatcher, error) {
	if s.known.size() == 0 {
		return nil, nil
	}
	key, err := s.detectKey()
	if err != nil {
		return nil, err
	}
	sees := s.knownVisibility(actor)
	m := &knownMatcher{s: s, key: key, hits: map[string]knownHit{}, visible: func(e knownEntry) bool { return sees(e.coll, e.field, e.id) }}
	return m, nil
}

// knownVisibility says which known values a caller may have found: a
// writer or admin, all; an agent, those of fields its live grants name,
// in records they name if they name any (id "" asks about the field).
func (s *Service) knownVisibility(actor *Principal) func(coll, field, id string) bool {
	if fullView(actor) {
		return func(string, string, string) bool { return true }
	}
	now := s.now()
	var live []*Grant
	for _, g := range s.agentGrants(actor.ID) {
		if g.state(now) == GrantLive {
			live = append(live, g)
		}
	}
	return func(coll, field, id string) bool {
		for _, g := range live {
			if g.Collection == coll && slices.Contains(g.Fields, field) && (id == "" || len(g.RecordIDs) == 0 || slices.Contains(g.RecordIDs, id)) {
				return true
			}
		}
		return false
	}
}

// knownType is how a known value's type reads in a text token:
// customers.full_name -> CUSTOMERS_FULL_NAME.
func knownType(typ string) string {
	return strings.ToUpper(strings.ReplaceAll(typ, ".", "_"))
}
