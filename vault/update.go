package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/agentvault/agentvault/keys"
	"github.com/agentvault/agentvault/storage"
	"github.com/agentvault/agentvault/tokenizer"
)

// UpdateRecord changes the named fields of a record atomically; a null
// value removes the field. A changed sensitive value is encrypted anew
// (bound to its record and field); its random or format-preserving token
// is replaced (the old one answers not_found from then on) and its
// deterministic token follows the value. Per-key value counts, the token
// index and plain-field indexes stay exact: the change runs in the single
// writer against the stored record. Audited as records.update with the
// fields changed.
func (s *Service) UpdateRecord(ctx context.Context, meta RequestMeta, collection, id string, changes map[string]json.RawMessage) (*Record, error) {
	for attempt := 1; ; attempt++ {
		rec, err := s.updateRecord(ctx, meta, collection, id, changes)
		if errors.Is(err, errKeyRotated) && attempt < keyRetries {
			continue
		}
		return rec, err
	}
}

func (s *Service) updateRecord(ctx context.Context, meta RequestMeta, collection, id string, changes map[string]json.RawMessage) (*Record, error) {
	if len(changes) == 0 {
		return nil, invalid("empty_update", "fields must name at least one field to change")
	}
	c, err := s.collection(collection)
	if err != nil {
		return nil, err
	}
	u, err := prepareUpdate(c, id, changes)
	if err != nil {
		return nil, err
	}
	e := s.newEntry(meta, "records.update")
	e.Collection, e.RecordIDs = c.Name, []string{id}
	for name := range changes {
		e.Fields = append(e.Fields, name)
	}
	slices.Sort(e.Fields)
	var out *Record
	t := newTally()
	err = s.writer.apply(&mutation{entry: e, size: 4096 + 64*len(changes) + MaxValueBytes*len(u.prepared), prepare: func(txn storage.Txn) error {
		rec, err := s.writeUpdate(txn, c, id, u, t)
		out = rec
		return err
	}})
	if err != nil {
		return nil, err
	}
	s.applyKnown(t.known)
	return out, nil
}

// preparedUpdate is an update's changed fields, parsed and encrypted
// outside the writer, and the fields it removes.
type preparedUpdate struct {
	prepared map[string]*preparedField
	removed  map[string]bool
}

func prepareUpdate(c *collection, id string, changes map[string]json.RawMessage) (preparedUpdate, error) {
	u := preparedUpdate{prepared: map[string]*preparedField{}, removed: map[string]bool{}}
	toks := tokenizer.NewTokens(len(changes))
	defer toks.Clear()
	for name, raw := range changes {
		f, ok := c.Field(name)
		if !ok {
			return u, invalid("unknown_field", "collection %q has no field %q", c.Name, name)
		}
		if len(raw) == 0 || string(raw) == "null" {
			u.removed[name] = true
			continue
		}
		v, err := parseValue(f, raw)
		if err != nil {
			return u, badValue(err, fmt.Sprintf("field %q", name))
		}
		u.prepared[name] = new(preparedField)
		if err := prepareField(u.prepared[name], c, f, v, fieldAD(c.Name, id, f.Name), toks); err != nil {
			return u, err
		}
	}
	return u, nil
}

// writeUpdate applies an update in the writer's transaction and returns
// the record as it now is. Every refusal comes before the first write:
// the batch's transaction is shared, and a rejected mutation must leave
// it as it found it.
func (s *Service) writeUpdate(txn storage.Txn, c *collection, id string, u preparedUpdate, t *tally) (*Record, error) {
	sr, err := loadRecord(txn, c.Name, id)
	if errors.Is(err, ErrNotFound) {
		return nil, reject(err)
	}
	if err != nil {
		return nil, err
	}
	taken := map[string]bool{}
	for _, pf := range u.prepared {
		if kid, ok := keys.KeyID(pf.cipher); ok {
			if staleKey(c, kid) {
				return nil, reject(errKeyRotated)
			}
			t.perKey[kid]++
		}
		if pf.field.Token == tokenizer.KindFormatPreserving {
			if pf.token, err = s.freeFormatToken(txn, pf.field.Format, pf.fpe, taken); err != nil {
				return nil, reject(invalidf(err, "field %q", pf.field.Name))
			}
		}
	}
	kept := sr.Fields[:0:0]
	for _, f := range sr.Fields {
		if u.prepared[f.Name] == nil && !u.removed[f.Name] {
			kept = append(kept, f)
		}
	}
	if len(kept)+len(u.prepared) == 0 {
		return nil, reject(invalid("empty_record", "the update would leave the record with no fields"))
	}
	// Drop what the changed fields held: token index entries (and their
	// per-key counts) and plain index keys.
	for _, f := range sr.Fields {
		if u.prepared[f.Name] != nil || u.removed[f.Name] {
			if err := dropField(txn, &c.Collection, id, f, t); err != nil {
				return nil, err
			}
		}
	}
	sr.Fields = kept
	for _, f := range c.Fields {
		pf := u.prepared[f.Name]
		if pf == nil {
			continue
		}
		if err := setField(txn, nil, c.Name, id, pf, t); err != nil {
			return nil, err
		}
		if pf.field.Sensitive {
			sr.Fields = append(sr.Fields, storedField{Name: f.Name, Token: pf.token})
		} else {
			sr.Fields = append(sr.Fields, storedField{Name: f.Name, Value: pf.value})
		}
	}
	if err := txn.Set(recordKey(c.Name, id), encodeRecord(&sr)); err != nil {
		return nil, err
	}
	rec := recordFrom(id, sr, nil)
	return &rec, addKeyCounts(txn, c.Name, t.perKey)
}

// prepareField encrypts a parsed value for a record (a sensitive field),
// under ad (fieldAD's bytes), into pf, outside the writer. Format-preserving tokens are drawn in the
// writer, where the reservation is checked. Batches fill their fields in
// place, one allocation for all of them.
func prepareField(pf *preparedField, c *collection, f *Field, v json.RawMessage, ad []byte, toks *tokenizer.Tokens) error {
	var err error
	*pf = preparedField{field: f}
	if !f.Sensitive {
		pf.value = v
		return nil
	}
	if pf.cipher, err = c.dek().Encrypt(v, ad); err != nil {
		return fmt.Errorf("encrypt field %q: %w", f.Name, err)
	}
	switch f.Token {
	case tokenizer.KindRandom:
		pf.token = toks.Random()
	case tokenizer.KindDeterministic:
		if pf.token, err = tokenizer.Deterministic(c.index, f.Name, canonical(f, v)); err != nil {
			return err
		}
		if f.Detect {
			var str string
			_ = json.Unmarshal(v, &str) // a string: parseValue checked it
			if pf.known, pf.knownWords, err = knownHash(c.detect, str); err != nil {
				return err
			}
		}
	case tokenizer.KindFormatPreserving:
		_ = json.Unmarshal(v, &pf.fpe) // a string: parseValue checked it
	}
	return nil
}

// tally is what a write changes beyond the keys it sets: values counted
// per data key (written in its transaction) and known values (applied to
// the in-memory set once it is committed).
type tally struct {
	perKey map[uint32]int64
	known  []knownChange
}

func newTally() *tally { return &tally{perKey: map[uint32]int64{}} }

// dropField removes what a stored field keeps outside the record: its
// token index entry (counting its key down), its known-value entries, or
// its plain index key.
func dropField(txn storage.Txn, c *Collection, id string, f storedField, t *tally) error {
	fd, _ := c.Field(f.Name)
	if !f.sensitive() {
		if fd != nil && fd.Index {
			return txn.Delete(plainIndexKey(c.Name, f.Name, indexedValue(fd, f.Value), id))
		}
		return nil
	}
	if fd != nil && fd.Detect {
		ch, err := dropKnown(txn, c.Name, id, f.Name)
		if err != nil {
			return err
		}
		if ch != nil {
			t.known = append(t.known, *ch)
		}
	}
	key := tokenIndexKey(f.Token, c.Name, id, f.Name)
	item, err := txn.Get(key)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return nil
	case err != nil:
		return err
	}
	if err := item.Value(func(v []byte) error {
		ct, _, err := cipherOf(key, v)
		if kid, ok := keys.KeyID(ct); err == nil && ok {
			t.perKey[kid]--
		}
		return err
	}); err != nil {
		return err
	}
	return txn.Delete(key)
}

// setField writes what a new field value keeps outside the record, and
// tallies a known value it adds.
func setField(txn storage.Txn, eb *entryBuf, collection, id string, pf *preparedField, t *tally) error {
	if pf.field.Sensitive {
		if pf.known != nil {
			if err := setKnown(txn, collection, id, pf); err != nil {
				return err
			}
			t.known = append(t.known, knownChange{hash: pf.known, words: pf.knownWords, delta: 1})
		}
		key := eb.put(func(b []byte) []byte { return appendTokenIndexKey(b, pf.token, collection, id, pf.field.Name) })
		return txn.Set(key, eb.put(func(b []byte) []byte {
			return appendTokenIndexValue(b, pf.token, collection, id, pf.field.Name, pf.cipher)
		}))
	}
	if pf.field.Index {
		return txn.Set(plainIndexKey(collection, pf.field.Name, indexedValue(pf.field, pf.value), id), nil)
	}
	return nil
}
