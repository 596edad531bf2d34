package vault

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentvault/agentvault/keys"
	"github.com/agentvault/agentvault/storage"
	"github.com/agentvault/agentvault/tokenizer"
)

// FieldType is the JSON type of a field's values.
type FieldType string

// Field types.
const (
	TypeString  FieldType = "string"
	TypeNumber  FieldType = "number"
	TypeBoolean FieldType = "boolean"
)

// Field describes one field of a collection's records.
type Field struct {
	Name      string           `json:"name"`
	Type      FieldType        `json:"type"`
	Sensitive bool             `json:"sensitive"`
	Token     tokenizer.Kind   `json:"token,omitempty"`
	Format    tokenizer.Format `json:"format,omitempty"`
	Mask      tokenizer.Mask   `json:"mask,omitempty"`
	// Approval "always" makes every reveal of this field wait for a human.
	Approval string `json:"approval,omitempty"`
	// ApprovalAbove makes a reveal wait for a human when the (numeric)
	// value is strictly above it.
	ApprovalAbove *float64 `json:"approval_above,omitempty"`
	// Index keeps an equality index on a plain field, for search.
	Index bool `json:"index,omitempty"`
	// Detect makes redaction find this field's values in free text
	// (known-value detection); string values with deterministic tokens.
	Detect bool `json:"detect,omitempty"`

	// inexactThreshold is set when approval_above was written as a number
	// no float64 holds exactly (it would have been rounded).
	inexactThreshold bool
}

// UnmarshalJSON reads a field, noting an approval_above that a float64
// would round: normalize refuses it, since a rounded threshold can let a
// value just above the one written pass without approval.
func (f *Field) UnmarshalJSON(b []byte) error {
	type plain Field
	var raw struct {
		plain
		ApprovalAbove json.RawMessage `json:"approval_above,omitempty"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields() // as the API decodes every body
	if err := dec.Decode(&raw); err != nil {
		return err
	}
	*f = Field(raw.plain)
	if len(raw.ApprovalAbove) > 0 && string(raw.ApprovalAbove) != "null" {
		var n json.Number
		if err := json.Unmarshal(raw.ApprovalAbove, &n); err != nil {
			return err
		}
		x, exact := exactNumber(n.String())
		f.ApprovalAbove, f.inexactThreshold = &x, !exact
	}
	return nil
}

// Collection is a named schema of records.
type Collection struct {
	Name      string    `json:"name"`
	Fields    []Field   `json:"fields"`
	CreatedAt time.Time `json:"created_at"`
}

// Field returns the named field.
func (c *Collection) Field(name string) (*Field, bool) {
	for i := range c.Fields {
		if c.Fields[i].Name == name {
			return &c.Fields[i], true
		}
	}
	return nil, false
}

// MaxFields bounds a collection's schema.
const MaxFields = 128

var identifier = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

// detects reports whether a field of the collection has detect.
func (c *Collection) detects() bool {
	return slices.ContainsFunc(c.Fields, func(f Field) bool { return f.Detect })
}

// normalize checks a requested schema and fills defaults: sensitive fields
// default to random tokens and a mask suited to their format.
func (c *Collection) normalize() error {
	if !identifier.MatchString(c.Name) {
		return invalid("invalid_name", "collection name must match %s", identifier)
	}
	if len(c.Fields) == 0 {
		return invalid("invalid_fields", "a collection needs at least one field")
	}
	if len(c.Fields) > MaxFields {
		return invalid("invalid_fields", "a collection has at most %d fields", MaxFields)
	}
	seen := map[string]bool{}
	for i := range c.Fields {
		f := &c.Fields[i]
		if !identifier.MatchString(f.Name) {
			return invalid("invalid_field", "field %d: name must match %s", i, identifier)
		}
		if seen[f.Name] {
			return invalid("invalid_field", "field %q is listed twice", f.Name)
		}
		seen[f.Name] = true
		if err := f.normalize(); err != nil {
			return err
		}
	}
	return nil
}

func (f *Field) normalize() error {
	switch f.Type {
	case TypeString, TypeNumber, TypeBoolean:
	default:
		return invalid("invalid_field", "field %q: type must be string, number or boolean", f.Name)
	}
	if !f.Sensitive {
		if f.Token != "" || f.Format != "" || f.Mask != "" || f.Approval != "" || f.ApprovalAbove != nil || f.Detect {
			return invalid("invalid_field", "field %q: token, format, mask, approval and detect apply only to sensitive fields", f.Name)
		}
		return nil
	}
	if f.Index {
		return invalid("invalid_field", "field %q: index applies to plain fields; a sensitive field is found by its token (deterministic ones also by value)", f.Name)
	}
	if f.Token == "" {
		f.Token = tokenizer.KindRandom
	}
	switch f.Token {
	case tokenizer.KindRandom, tokenizer.KindDeterministic:
		if f.Format != "" {
			return invalid("invalid_field", "field %q: format applies only to format_preserving tokens", f.Name)
		}
	case tokenizer.KindFormatPreserving:
		if !f.Format.Valid() {
			return invalid("invalid_field", "field %q: format_preserving needs format, one of %v", f.Name, tokenizer.Formats)
		}
		if f.Type != TypeString {
			return invalid("invalid_field", "field %q: format_preserving fields must have type string", f.Name)
		}
	default:
		return invalid("invalid_field", "field %q: token must be random, deterministic or format_preserving", f.Name)
	}
	if f.Mask == "" {
		switch f.Format {
		case tokenizer.FormatCard:
			f.Mask = tokenizer.MaskLast4
		case tokenizer.FormatEmail:
			f.Mask = tokenizer.MaskEmail
		default:
			f.Mask = tokenizer.MaskFull
		}
	}
	if !f.Mask.Valid() {
		return invalid("invalid_field", "field %q: mask must be last4, email or full", f.Name)
	}
	if f.Approval != "" && f.Approval != "always" {
		return invalid("invalid_field", "field %q: approval must be \"always\" or absent", f.Name)
	}
	if f.inexactThreshold {
		return invalid("invalid_field", "field %q: approval_above must be a number a 64-bit float holds exactly (at most 15 significant digits)", f.Name)
	}
	if f.ApprovalAbove != nil && f.Type != TypeNumber {
		return invalid("invalid_field", "field %q: approval_above applies only to number fields", f.Name)
	}
	if f.Detect && (f.Type != TypeString || f.Token != tokenizer.KindDeterministic) {
		// A mention in text is a value, not a record: it is replaced by
		// the value's token, which only deterministic tokens give.
		return invalid("invalid_field", "field %q: detect needs type string and deterministic tokens (a mention found in text is replaced by the value's token)", f.Name)
	}
	return nil
}

func collectionKey(name string) []byte { return []byte("c/" + name) }
func dekKey(name string) []byte        { return keysetKey(dekScope(name)) }
func indexKeyKey(name string) []byte   { return keysetKey(indexScope(name)) }
func dekScope(name string) string      { return "dek/" + name }
func indexScope(name string) string    { return "idx/" + name }

// collection is a loaded collection: schema and unwrapped keys. The data
// keyset is swapped whole when it is rotated, disabled or destroyed.
type collection struct {
	Collection
	dekp    atomic.Pointer[keys.DataKey]
	wrapped atomic.Pointer[[]byte] // the stored (KEK-wrapped) form of dekp, to notice a change
	index   *keys.IndexKey
	detect  *keys.IndexKey // the vault's known-value key, if a field has detect
	retired sync.Map       // uint32 key id -> true once disabled or destroyed
}

func newCollection(schema Collection, dek *keys.DataKey, wrapped []byte, idx, detect *keys.IndexKey) *collection {
	c := &collection{Collection: schema, index: idx, detect: detect}
	c.setDEK(dek, wrapped)
	return c
}

// setDEK swaps in a data keyset (and the stored form it came from),
// marking the keys it no longer enables as retired.
func (c *collection) setDEK(dek *keys.DataKey, wrapped []byte) {
	c.dekp.Store(dek)
	c.wrapped.Store(&wrapped)
	for _, k := range dek.Keys() {
		if k.State != keys.StateEnabled {
			c.retired.Store(k.ID, true)
		}
	}
}

// wrappedDEK is the stored form of the data keyset in memory.
func (c *collection) wrappedDEK() []byte {
	if w := c.wrapped.Load(); w != nil {
		return *w
	}
	return nil
}

// dek is the current data keyset.
func (c *collection) dek() *keys.DataKey { return c.dekp.Load() }

func (c *collection) isRetired(id uint32) bool { _, ok := c.retired.Load(id); return ok }

// CreateCollection stores a new collection with fresh keysets wrapped by
// the KEK.
func (s *Service) CreateCollection(ctx context.Context, meta RequestMeta, c Collection) (*Collection, error) {
	c.Fields = slices.Clone(c.Fields) // normalize fills defaults; leave the caller's slice alone
	if err := c.normalize(); err != nil {
		return nil, err
	}
	c.CreatedAt = s.now()
	dek, err := s.keys.NewDataKey()
	if err != nil {
		return nil, err
	}
	idx, err := s.keys.NewIndexKey()
	if err != nil {
		return nil, err
	}
	var detectKey *keys.IndexKey
	if c.detects() {
		if detectKey, err = s.detectKey(); err != nil {
			return nil, err
		}
	}
	wrappedDEK, err := s.keys.WrapDataKey(dek, dekScope(c.Name))
	if err != nil {
		return nil, kmsErr(err)
	}
	wrappedIdx, err := s.keys.WrapIndexKey(idx, indexScope(c.Name))
	if err != nil {
		return nil, kmsErr(err)
	}
	schema, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	e := s.newEntry(meta, "collection.create")
	e.Collection = c.Name
	for _, f := range c.Fields {
		e.Fields = append(e.Fields, f.Name)
	}
	err = s.writer.apply(&mutation{entry: e, size: len(schema) + len(wrappedDEK) + len(wrappedIdx) + 512, prepare: func(txn storage.Txn) error {
		if _, err := txn.Get(collectionKey(c.Name)); err == nil {
			return reject(conflict("collection_exists", "collection %q already exists", c.Name))
		} else if !errors.Is(err, storage.ErrNotFound) {
			return err
		}
		for k, v := range map[string][]byte{string(collectionKey(c.Name)): schema, string(dekKey(c.Name)): wrappedDEK, string(indexKeyKey(c.Name)): wrappedIdx} {
			if err := txn.Set([]byte(k), v); err != nil {
				return err
			}
		}
		return nil
	}})
	if err != nil {
		return nil, err
	}
	s.cmu.Lock()
	s.collections[c.Name] = newCollection(c, dek, wrappedDEK, idx, detectKey)
	s.cmu.Unlock()
	s.log.Info("collection created", "collection", c.Name, "fields", len(c.Fields), "actor", actorID(meta.Actor))
	out := c
	return &out, nil
}

// kmsErr marks a KEK failure as unavailable unless it already says why.
func kmsErr(err error) error {
	if errors.Is(err, keys.ErrKMSUnavailable) {
		return err
	}
	return fmt.Errorf("%w: %v", keys.ErrKMSUnavailable, err)
}

// GetCollection returns a collection's schema as the actor may see it: an
// agent sees only the fields its live grants name (for the purpose, if it
// gives one), and a collection it has no grant on does not exist for it.
func (s *Service) GetCollection(ctx context.Context, actor *Principal, name, purpose string) (*Collection, error) {
	c, err := s.schema(name)
	if err != nil {
		return nil, s.hideCollection(actor, err)
	}
	v, err := s.schemaView(actor, name, purpose)
	if err != nil {
		return nil, err
	}
	out := v.visibleSchema(c)
	if out == nil {
		return nil, notFound("collection_not_found", "no collection %q", name)
	}
	return out, nil
}

// VisibleCollections lists the schemas the actor may see, by name: every
// one for writers and admins, for an agent those its live grants name,
// cut to the fields they name.
func (s *Service) VisibleCollections(ctx context.Context, actor *Principal, purpose string) ([]Collection, error) {
	all, err := s.ListCollections(ctx)
	if err != nil {
		return nil, err
	}
	out := []Collection{}
	for _, c := range all {
		v, err := s.schemaView(actor, c.Name, purpose)
		if err != nil {
			return nil, err
		}
		if vc := v.visibleSchema(c); vc != nil {
			out = append(out, *vc)
		}
	}
	return out, nil
}

// ListCollections returns every collection's schema, by name.
func (s *Service) ListCollections(context.Context) ([]Collection, error) {
	var out []Collection
	err := s.store.View(func(txn storage.Txn) error {
		it := txn.NewIterator(storage.IterOptions{Prefix: []byte("c/"), PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var c Collection
			if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &c) }); err != nil {
				return err
			}
			out = append(out, c)
		}
		return nil
	})
	slices.SortFunc(out, func(a, b Collection) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out, err
}

// schema reads a collection's schema without its keys.
func (s *Service) schema(name string) (Collection, error) {
	s.cmu.RLock()
	c, ok := s.collections[name]
	s.cmu.RUnlock()
	if ok {
		return c.Collection, nil
	}
	var out Collection
	err := s.store.View(func(txn storage.Txn) (err error) {
		out, err = readSchema(txn, name)
		return err
	})
	return out, err
}

func readSchema(txn storage.Txn, name string) (Collection, error) {
	var c Collection
	item, err := txn.Get(collectionKey(name))
	if errors.Is(err, storage.ErrNotFound) {
		return c, notFound("collection_not_found", "no collection named %q", name)
	}
	if err != nil {
		return c, err
	}
	err = item.Value(func(v []byte) error { return json.Unmarshal(v, &c) })
	return c, err
}

// collection returns a loaded collection, unwrapping its keysets through
// the KEK on first use. After that the hot path never calls the KMS.
func (s *Service) collection(name string) (*collection, error) { return s.collectionIn(nil, name) }

// collectionIn is collection for a caller inside a transaction, txn (nil:
// none): a collection not yet in memory is read through txn. It never
// waits for the store while holding loadMu, and inside a transaction it
// never opens a second one: on PostgreSQL each holds a pooled
// connection, and requests each holding one while waiting for another
// (or for loadMu, held by one that waits for a connection) once took
// every connection of a node's pool and never gave them back.
func (s *Service) collectionIn(txn storage.Txn, name string) (*collection, error) {
	s.cmu.RLock()
	c, ok := s.collections[name]
	s.cmu.RUnlock()
	if ok {
		return c, nil
	}
	var schema Collection
	var wrappedDEK, wrappedIdx, wrappedDetect []byte
	read := func(txn storage.Txn) (err error) {
		if schema, err = readSchema(txn, name); err != nil {
			return err
		}
		if wrappedDEK, err = getValue(txn, dekKey(name)); err != nil {
			return err
		}
		if wrappedIdx, err = getValue(txn, indexKeyKey(name)); err != nil {
			return err
		}
		if schema.detects() && s.knownPRF.Load() == nil {
			wrappedDetect, err = getValue(txn, keysetKey(knownScope))
			if errors.Is(err, storage.ErrNotFound) {
				err = nil
			}
		}
		return err
	}
	var err error
	if txn != nil {
		err = read(txn)
	} else {
		err = s.store.View(read)
	}
	if err != nil {
		return nil, err
	}
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	s.cmu.RLock()
	c, ok = s.collections[name]
	s.cmu.RUnlock()
	if ok {
		return c, nil
	}
	dek, err := s.keys.OpenDataKey(wrappedDEK, dekScope(name))
	if err != nil {
		return nil, kmsErr(err)
	}
	idx, err := s.keys.OpenIndexKey(wrappedIdx, indexScope(name))
	if err != nil {
		return nil, kmsErr(err)
	}
	var detectKey *keys.IndexKey
	if schema.detects() {
		if wrappedDetect == nil && txn != nil && s.knownPRF.Load() == nil {
			// Making it writes, which is for no caller inside a transaction.
			return nil, fmt.Errorf("%w: collection %s: the known-values keyset is not made yet", ErrUnavailable, name)
		}
		if detectKey, err = s.vaultPRFLocked(knownScope, &s.knownPRF, s.keys.NewDetectKey, wrappedDetect); err != nil {
			return nil, err
		}
	}
	c = newCollection(schema, dek, wrappedDEK, idx, detectKey)
	s.cmu.Lock()
	s.collections[name] = c
	s.cmu.Unlock()
	return c, nil
}

// keysetKey is where the KEK-wrapped keyset for scope is stored. Every
// wrapped keyset lives under "k/", which is how KEK rotation finds them.
func keysetKey(scope string) []byte { return []byte("k/" + scope) }

// storedKeyset returns the wrapped keyset stored for scope, or nil if
// there is none yet.
func (s *Service) storedKeyset(scope string) ([]byte, error) {
	var wrapped []byte
	err := s.store.View(func(txn storage.Txn) error {
		item, err := txn.Get(keysetKey(scope))
		if errors.Is(err, storage.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		wrapped, err = item.ValueCopy(nil)
		return err
	})
	return wrapped, err
}

// storeNewKeyset stores a keyset created on first use, with its audit
// entry, and any companion values (a public key).
func (s *Service) storeNewKeyset(scope string, wrapped []byte, also map[string][]byte) error {
	size := len(wrapped) + 256
	for _, v := range also {
		size += len(v)
	}
	e := s.newEntry(RequestMeta{}, "key.create")
	e.Target = scope
	// The audit log's own keys (token hashes, checkpoint signing) are what
	// reads and reveals need: small, they go on into the storage reserve.
	auditOnly := strings.HasPrefix(scope, "audit/")
	return s.writer.apply(&mutation{entry: e, size: size, auditOnly: auditOnly, prepare: func(txn storage.Txn) error {
		for k, v := range also {
			if err := txn.Set([]byte(k), v); err != nil {
				return err
			}
		}
		return txn.Set(keysetKey(scope), wrapped)
	}})
}

func getValue(txn storage.Txn, key []byte) ([]byte, error) {
	item, err := txn.Get(key)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	return item.ValueCopy(nil)
}
