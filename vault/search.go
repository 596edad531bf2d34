package vault

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/google/uuid"

	"github.com/agentvault/agentvault/storage"
	"github.com/agentvault/agentvault/tokenizer"
)

// A plain field marked "index": true has one key per record,
// "pi/<collection>\0<field>\0<value>\0<record id>", where value is the
// field's canonical JSON (a hash of it past 64 bytes), so an equality
// search reads the matching records' keys and nothing else.
func plainIndexPrefix(collection, field string, value []byte) []byte {
	v := string(value)
	if len(v) > 64 {
		sum := sha256.Sum256(value)
		v = "#" + hex.EncodeToString(sum[:]) // JSON never starts with '#'
	}
	return []byte("pi/" + collection + "\x00" + field + "\x00" + v + "\x00")
}

func plainIndexKey(collection, field string, value []byte, id string) []byte {
	return append(plainIndexPrefix(collection, field, value), id...)
}

// indexedValue is what the plain index keys a stored value by.
func indexedValue(f *Field, v json.RawMessage) []byte { return canonical(f, v) }

// SearchRequest finds records by equality on fields: indexed plain fields
// by value, deterministic sensitive fields by value or token, any
// sensitive field by token. Conditions are ANDed.
type SearchRequest struct {
	Where   map[string]json.RawMessage `json:"where"`
	Purpose string                     `json:"purpose,omitempty"`
	Limit   int                        `json:"limit,omitempty"`
	After   string                     `json:"after,omitempty"`
}

// MaxSearchConditions bounds one search.
const MaxSearchConditions = 16

// condition is one parsed equality: the stored form a matching record
// holds (a plain value's JSON, or a token).
type condition struct {
	field *Field
	plain []byte // indexed plain field: the canonical value
	token string // sensitive field: the token
}

// SearchRecords finds the records matching every condition, as the actor
// may see them, paged like ListRecords. A sensitive field searched by
// value is a membership oracle: writers may, an agent only under a live
// grant that reveals the field plain. The search is audited
// (records.search) with the fields searched and keyed hashes of the
// values, never the values, and the records returned, before it is
// answered. Its cost follows the matches of its first condition, never
// the collection's size.
func (s *Service) SearchRecords(ctx context.Context, meta RequestMeta, collection string, req SearchRequest) ([]Record, string, error) {
	switch {
	case len(req.Where) == 0:
		return nil, "", invalid("empty_where", "where must hold at least one condition")
	case len(req.Where) > MaxSearchConditions:
		return nil, "", invalid("too_many_conditions", "at most %d conditions", MaxSearchConditions)
	case req.Limit == 0:
		req.Limit = DefaultPageSize
	case req.Limit < 0 || req.Limit > MaxPageSize:
		return nil, "", invalid("invalid_limit", "limit is 1 to %d", MaxPageSize)
	}
	if req.After != "" {
		if _, err := uuid.Parse(req.After); err != nil {
			return nil, "", invalid("invalid_cursor", "after must be the next cursor of an earlier page")
		}
	}
	r, err := s.openRead(meta, "records.search", collection, req.Purpose)
	if err != nil {
		return nil, "", err
	}
	hasher, err := s.tokenHasher()
	if err != nil {
		return nil, "", err
	}
	names := make([]string, 0, len(req.Where))
	for name := range req.Where {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		h, err := hasher.Compute(append([]byte(name+"\x00"), req.Where[name]...), 16)
		if err != nil {
			return nil, "", err
		}
		r.entry.Tokens = append(r.entry.Tokens, TokenDecision{TokenHash: hex.EncodeToString(h), Field: name, Decision: "searched"})
	}
	if r.hidden {
		return nil, "", r.refuse(noGrant, 2048, r.collectionNotFound())
	}
	c, err := s.collection(collection)
	if err != nil {
		return nil, "", err
	}
	conds, err := s.conditions(c, r.view, meta.Actor, req.Where, names)
	if errors.Is(err, ErrForbidden) {
		// A refused membership probe is worth an entry of its own.
		return nil, "", r.refuse(err.Error(), 2048, err)
	}
	if err != nil {
		return nil, "", err
	}
	recs, next, err := s.searchPage(ctx, c.Name, r.view, conds, req.Limit, req.After)
	if err != nil {
		return nil, "", err
	}
	fillReadEntry(r.entry, recs)
	if err := r.answer(4096+40*min(len(recs), auditIDsUpTo), nil); err != nil {
		return nil, "", err
	}
	return recs, next, nil
}

// conditions parses the where clause against the schema and the actor's
// view. An agent may search only fields it sees.
func (s *Service) conditions(c *collection, v view, actor *Principal, where map[string]json.RawMessage, names []string) ([]condition, error) {
	var conds []condition
	for _, name := range names {
		f, ok := c.Field(name)
		visible := v.all
		for _, g := range v.grants {
			visible = visible || slices.Contains(g.Fields, name)
		}
		if !ok || !visible {
			return nil, invalid("unknown_field", "collection %q has no field %q", c.Name, name)
		}
		raw := where[name]
		if !f.Sensitive {
			if !f.Index {
				return nil, invalid("field_not_indexed", "field %q is not indexed: mark it \"index\": true to search it", name)
			}
			val, err := parseValue(f, raw)
			if err != nil {
				return nil, invalid("invalid_value", "condition on field %q %v", name, err)
			}
			conds = append(conds, condition{field: f, plain: indexedValue(f, val)})
			continue
		}
		var tok string
		if json.Unmarshal(raw, &tok) == nil && isTokenOf(f, tok) {
			conds = append(conds, condition{field: f, token: tok})
			continue
		}
		if f.Token != tokenizer.KindDeterministic {
			return nil, invalid("invalid_condition", "field %q is found by its token only", name)
		}
		if !v.all && !revealsPlain(v, name) {
			return nil, &Error{Kind: ErrForbidden, Code: "value_search_forbidden", Message: fmt.Sprintf("searching field %q by value needs a grant that reveals it plain", name)}
		}
		val, err := parseValue(f, raw)
		if err != nil {
			return nil, invalid("invalid_value", "condition on field %q %v", name, err)
		}
		if tok, err = tokenizer.Deterministic(c.index, name, canonical(f, val)); err != nil {
			return nil, err
		}
		conds = append(conds, condition{field: f, token: tok})
	}
	// The most selective first: a point token, then a shared token, then a
	// plain value.
	slices.SortStableFunc(conds, func(a, b condition) int { return rank(a) - rank(b) })
	return conds, nil
}

func rank(c condition) int {
	switch {
	case c.token != "" && !isShared(c.token):
		return 0
	case c.token != "":
		return 1
	}
	return 2
}

// isTokenOf reports whether s is shaped like a token of field f's kind.
func isTokenOf(f *Field, s string) bool {
	if _, err := tokenizer.ParseToken(s); err != nil {
		return false
	}
	switch f.Token {
	case tokenizer.KindDeterministic:
		return strings.HasPrefix(s, tokenizer.DeterministicPrefix)
	case tokenizer.KindRandom:
		return strings.HasPrefix(s, tokenizer.RandomPrefix)
	}
	return tokenizer.CheckValue(f.Format, s) == nil
}

func revealsPlain(v view, field string) bool {
	for _, g := range v.grants {
		if g.Reveal == RevealPlain && slices.Contains(g.Fields, field) {
			return true
		}
	}
	return false
}

// searchPage walks the first condition's matches in record-id order, from
// the cursor, and keeps the records every condition holds for and the view
// shows.
func (s *Service) searchPage(ctx context.Context, collection string, v view, conds []condition, limit int, after string) ([]Record, string, error) {
	recs := []Record{}
	next := ""
	err := s.store.View(func(txn storage.Txn) error {
		consider := func(id string) (bool, error) {
			if id <= after {
				return true, nil
			}
			shown, visible := v.fieldsFor(id)
			if !visible {
				return true, nil
			}
			item, err := txn.Get(recordKey(collection, id))
			if errors.Is(err, storage.ErrNotFound) {
				return true, nil
			}
			if err != nil {
				return false, err
			}
			var sr storedRecord
			if err := item.Value(func(b []byte) (err error) { sr, err = decodeRecord(b); return err }); err != nil {
				return false, err
			}
			if !matchesAll(sr, conds) {
				return true, nil
			}
			if len(recs) == limit {
				next = recs[len(recs)-1].ID
				return false, nil
			}
			recs = append(recs, recordFrom(id, sr, shown))
			return true, nil
		}
		first := conds[0]
		if first.token != "" && !isShared(first.token) {
			ref, ok, err := lookupPoint(txn, first.token)
			if err != nil || !ok || ref.Collection != collection || ref.Field != first.field.Name {
				return err
			}
			_, err = consider(ref.RecordID)
			return err
		}
		prefix := plainIndexPrefix(collection, first.field.Name, first.plain)
		if first.token != "" {
			prefix = []byte("x/" + first.token + "\x00" + collection + "\x00")
		}
		it := txn.NewIterator(storage.IterOptions{Prefix: prefix})
		defer it.Close()
		start := prefix
		if after != "" {
			start = append(append([]byte{}, prefix...), after...)
		}
		for it.Seek(start); it.ValidForPrefix(prefix); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			id := string(it.Item().Key()[len(prefix):])
			if first.token != "" {
				ref, ok := sharedKeyRef(it.Item().Key())
				if !ok || ref.Field != first.field.Name {
					continue
				}
				id = ref.RecordID
			}
			if more, err := consider(id); err != nil || !more {
				return err
			}
		}
		return nil
	})
	return recs, next, err
}

// matchesAll checks a stored record against every condition.
func matchesAll(sr storedRecord, conds []condition) bool {
	for _, c := range conds {
		found := false
		for _, f := range sr.Fields {
			if f.Name != c.field.Name {
				continue
			}
			if c.token != "" {
				found = f.Token == c.token
			} else {
				found = string(indexedValue(c.field, f.Value)) == string(c.plain)
			}
			break
		}
		if !found {
			return false
		}
	}
	return true
}
