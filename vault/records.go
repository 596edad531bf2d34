package vault

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/agentvault/agentvault/internal/jsontext"
	"github.com/agentvault/agentvault/keys"
	"github.com/agentvault/agentvault/storage"
	"github.com/agentvault/agentvault/tokenizer"
)

// Record is a stored record as callers see it: sensitive fields carry
// their tokens, never their values.
type Record struct {
	ID        string                     `json:"id"`
	Fields    map[string]json.RawMessage `json:"fields"`
	CreatedAt time.Time                  `json:"created_at"`
}

// MaxValueBytes bounds one field value's JSON encoding.
const MaxValueBytes = 16 << 10

// maxTokenAttempts bounds the retries for a free format-preserving token.
const maxTokenAttempts = 32

func recordKey(collection, id string) []byte { return appendRecordKey(nil, collection, id) }

func appendRecordKey(dst []byte, collection, id string) []byte {
	dst = append(append(dst, "r/"...), collection...)
	return append(append(dst, 0), id...)
}

// The token index maps a token to where its value lives and holds the
// value's ciphertext. A random or format-preserving token stands for
// exactly one value, so it has a point key, "t/<token>" (a lookup uses
// Badger's bloom filters; for format-preserving tokens the key is also the
// vault-wide reservation). A deterministic token can stand for the same
// value in many records, so it has one key per record,
// "x/<token>\0<collection>\0<record>\0<field>", and lookups scan its prefix.
func tokenIndexKey(token, collection, id, field string) []byte {
	return appendTokenIndexKey(nil, token, collection, id, field)
}

func appendTokenIndexKey(dst []byte, token, collection, id, field string) []byte {
	if !isShared(token) {
		return append(append(dst, "t/"...), token...)
	}
	dst = append(append(dst, "x/"...), token...)
	dst = append(append(dst, 0), collection...)
	dst = append(append(dst, 0), id...)
	return append(append(dst, 0), field...)
}

func pointTokenKey(token string) []byte { return []byte("t/" + token) }

// sharedKeyRef reads the place a deterministic token's index key names.
func sharedKeyRef(key []byte) (TokenRef, bool) {
	parts := bytes.SplitN(bytes.TrimPrefix(key, []byte("x/")), []byte{0}, 4)
	if len(parts) != 4 {
		return TokenRef{}, false
	}
	return TokenRef{Collection: string(parts[1]), RecordID: string(parts[2]), Field: string(parts[3])}, true
}

func tokenIndexPrefix(token string) []byte { return []byte("x/" + token + "\x00") }

// isShared reports whether a token may stand for several records.
func isShared(token string) bool { return strings.HasPrefix(token, tokenizer.DeterministicPrefix) }

// tokenIndexValue is a token-index entry's value: for point keys the place
// (collection, record, field) and the ciphertext; for prefix keys, whose
// key names the place, the ciphertext alone.
func tokenIndexValue(token, collection, id, field string, cipher []byte) []byte {
	return appendTokenIndexValue(nil, token, collection, id, field, cipher)
}

func appendTokenIndexValue(dst []byte, token, collection, id, field string, cipher []byte) []byte {
	if !isShared(token) {
		dst = appendString(dst, collection)
		dst = appendString(dst, id)
		dst = appendString(dst, field)
	}
	return append(dst, cipher...)
}

// entryBytes is about what a batch's record and token-index entries
// take, to size its entryBuf.
func entryBytes(collection string, recs []preparedRecord) int {
	n := 0
	for i := range recs {
		n += 32 + 2*len(collection) + 2*len(recs[i].id)
		for _, pf := range recs[i].fields {
			n += 16 + 2*len(pf.field.Name) + len(pf.value) + 2*len(pf.token) + len(pf.cipher)
		}
	}
	return n
}

// entryBuf holds the keys and values of a batch's entries in one growing
// buffer rather than an allocation each. What put hands out stays valid:
// a buffer that grows leaves the earlier slices on its old array. A nil
// entryBuf allocates each.
type entryBuf struct{ b []byte }

// put appends with f and returns what f appended.
func (e *entryBuf) put(f func([]byte) []byte) []byte {
	if e == nil {
		return f(nil)
	}
	start := len(e.b)
	e.b = f(e.b)
	return e.b[start:len(e.b):len(e.b)]
}

// decodePointRef reads a point-key token-index value.
func decodePointRef(v []byte) (TokenRef, error) {
	d := decoder{b: v}
	ref := TokenRef{Collection: string(d.bytes()), RecordID: string(d.bytes()), Field: string(d.bytes())}
	if d.err != nil {
		return TokenRef{}, errCorruptRecord
	}
	ref.cipher = append([]byte(nil), d.b...)
	return ref, nil
}

// fieldAD binds a ciphertext to the collection, record and field it lives
// in: copied anywhere else it does not decrypt. Names and ids cannot hold
// NUL, so the encoding is unambiguous.
func fieldAD(collection, id, field string) []byte {
	return appendFieldAD(nil, collection, id, field)
}

// appendFieldAD appends fieldAD's bytes to dst.
func appendFieldAD(dst []byte, collection, id, field string) []byte {
	dst = append(dst, "agentvault/field/v1\x00"...)
	dst = append(append(dst, collection...), 0)
	dst = append(append(dst, id...), 0)
	return append(dst, field...)
}

// parseValue checks raw against the field's type and returns its compact
// JSON encoding, which is what gets encrypted (so reveals return the value
// in its stored JSON type).
func parseValue(f *Field, raw json.RawMessage) (json.RawMessage, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return nil, errors.New("empty")
	}
	if len(raw) > MaxValueBytes {
		return nil, fmt.Errorf("longer than %d bytes", MaxValueBytes)
	}
	switch f.Type {
	case TypeString:
		if raw[0] != '"' {
			return nil, errors.New("must be a string")
		}
		plain := jsontext.IsPlain(raw)
		var s string
		if plain {
			if f.Format != "" {
				s = string(raw[1 : len(raw)-1])
			}
		} else {
			var ok bool
			if s, ok = jsonString(raw); !ok {
				return nil, errors.New("must be a string")
			}
		}
		if f.Format != "" {
			if err := tokenizer.CheckValue(f.Format, s); err != nil {
				return nil, &formatError{f.Format}
			}
		}
		if plain {
			return raw, nil
		}
		return json.Marshal(s)
	case TypeNumber:
		n, ok := json.Number(""), false
		if raw[0] == '-' || (raw[0] >= '0' && raw[0] <= '9') {
			n, ok = jsonNumber(raw)
		}
		if !ok {
			return nil, errors.New("must be a number")
		}
		if _, exact := exactNumber(n.String()); !exact {
			return nil, errInexactNumber
		}
		return json.RawMessage(n.String()), nil
	case TypeBoolean:
		switch string(raw) {
		case "true", "false":
			return raw, nil
		}
		return nil, errors.New("must be true or false")
	}
	return nil, fmt.Errorf("unknown type %q", f.Type)
}

// jsonString decodes a JSON string; apart from parseValue, whose own
// variables then stay off the heap.
func jsonString(raw []byte) (string, bool) {
	var s string
	err := json.Unmarshal(raw, &s)
	return s, err == nil
}

// jsonNumber decodes a JSON number, as jsonString does a string.
func jsonNumber(raw []byte) (json.Number, bool) {
	var n json.Number
	err := json.Unmarshal(raw, &n)
	return n, err == nil
}

// badValue answers a value parseValue refused, where names it:
// invalid_value for the right type outside the field's format or a
// float64's precision, wrong_type otherwise. Neither names the value.
func badValue(err error, where string) error {
	code := "wrong_type"
	var fe *formatError
	if errors.As(err, &fe) || errors.Is(err, errInexactNumber) {
		code = "invalid_value"
	}
	return invalid(code, "%s %v", where, err)
}

// errInexactNumber reports a number that a float64 would round.
var errInexactNumber = errors.New("must be a number a 64-bit float holds exactly (at most 15 significant digits, within ±1.7e308); store longer numbers as strings")

// formatError reports a string that does not fit the field's format.
type formatError struct{ format tokenizer.Format }

func (e *formatError) Error() string {
	return "must be a valid " + string(e.format) + " (" + e.format.Rule() + ")"
}

// canonical is the deterministic-token input for a value: numbers are
// normalised so 1, 1.0, 1e0 (and -0 and 0) share a token. Stored numbers
// are exact float64 values (see exactNumber), so two numbers share a
// token exactly when they are equal.
func canonical(f *Field, v json.RawMessage) []byte {
	if f.Type == TypeNumber {
		x, _ := strconv.ParseFloat(string(v), 64)
		if x == 0 {
			x = 0 // -0 and 0 are one value
		}
		return []byte(strconv.FormatFloat(x, 'g', -1, 64))
	}
	return v
}

type preparedField struct {
	field  *Field
	value  json.RawMessage // plain JSON: kept only for non-sensitive fields and FPE shape
	token  string
	cipher []byte
	fpe    string // the string value, for format-preserving tokens
	// known is a detect field's keyed hash for known-value detection,
	// with the value's word count.
	known      []byte
	knownWords int
}

type preparedRecord struct {
	id     string
	fields []preparedField
}

// FieldValue is one field of a record: its name and its JSON value.
type FieldValue struct {
	Name  string
	Value json.RawMessage
}

// NewRecord is a record to create: its fields, each name once, in any
// order.
type NewRecord []FieldValue

// NewRecordOf is a record given as a map, its fields by name; nil for a
// nil map.
func NewRecordOf(fields map[string]json.RawMessage) NewRecord {
	if fields == nil {
		return nil
	}
	rec := make(NewRecord, 0, len(fields))
	for _, name := range slices.Sorted(maps.Keys(fields)) {
		rec = append(rec, FieldValue{name, fields[name]})
	}
	return rec
}

// CreatedRecord is a record as its create answers it: its fields in the
// order they were given, sensitive ones as their tokens (JSON strings).
type CreatedRecord struct {
	ID        string
	Fields    []FieldValue
	CreatedAt time.Time
}

// Record is the record as the other reads answer it.
func (c *CreatedRecord) Record() Record {
	r := Record{ID: c.ID, Fields: make(map[string]json.RawMessage, len(c.Fields)), CreatedAt: c.CreatedAt}
	for _, f := range c.Fields {
		r.Fields[f.Name] = f.Value
	}
	return r
}

// prepareBatch validates a batch of records against the collection and
// encrypts their sensitive fields, outside the writer: ids drawn, values
// parsed, tokens computed (format-preserving ones are drawn in the
// writer). The batch's fields share one allocation.
func prepareBatch(c *collection, inputs []NewRecord) ([]preparedRecord, error) {
	recs := make([]preparedRecord, len(inputs))
	nfields := 0
	for _, in := range inputs {
		nfields += len(in)
	}
	all := make([]preparedField, 0, nfields) // one allocation for the batch's fields
	toks := tokenizer.NewTokens(nfields)     // one random read for the batch's tokens
	defer toks.Clear()
	var ad []byte // each field's associated data, built in one buffer
	for i, in := range inputs {
		if len(in) == 0 {
			return nil, invalid("empty_record", "record %d has no fields", i)
		}
		id, err := uuid.NewV7()
		if err != nil {
			return nil, err
		}
		pr := preparedRecord{id: id.String()}
		first := len(all)
		for j, fv := range in {
			f, ok := c.Field(fv.Name)
			if !ok {
				return nil, invalid("unknown_field", "record %d: collection %q has no field %q", i, c.Name, fv.Name)
			}
			if repeated(in[:j], fv.Name) {
				return nil, invalid("duplicate_field", "record %d: field %q is given more than once", i, fv.Name)
			}
			v, err := parseValue(f, fv.Value)
			if err != nil {
				return nil, badValue(err, fmt.Sprintf("record %d: field %q", i, fv.Name))
			}
			all = append(all, preparedField{})
			ad = appendFieldAD(ad[:0], c.Name, pr.id, f.Name)
			if err := prepareField(&all[len(all)-1], c, f, v, ad, toks); err != nil {
				return nil, err
			}
		}
		pr.fields = all[first:len(all):len(all)]
		recs[i] = pr
	}
	return recs, nil
}

// repeated reports whether name is among fields' names. Records have few
// fields: a scan costs less than a set.
func repeated(fields []FieldValue, name string) bool {
	return slices.ContainsFunc(fields, func(f FieldValue) bool { return f.Name == name })
}

// errKeyRotated refuses a write whose values were encrypted under a data
// key that is no longer the collection's primary when the writer runs it
// (rotated on this node or another meanwhile): the request encrypts again.
var errKeyRotated = &Error{Kind: ErrUnavailable, Code: "key_rotated", Message: "the collection's data key changed during the request; retry"}

// keyRetries bounds how often a write encrypts again after a rotation.
const keyRetries = 3

// staleKey reports a key a value may no longer be written under.
func staleKey(c *collection, id uint32) bool { return c.isRetired(id) || id != c.dek().PrimaryID() }

// CreateRecords is CreateRecordsInOrder for records given as maps, answered
// as the other reads answer records.
func (s *Service) CreateRecords(ctx context.Context, meta RequestMeta, collection string, inputs []map[string]json.RawMessage) ([]Record, error) {
	in := make([]NewRecord, len(inputs))
	for i, m := range inputs {
		in[i] = NewRecordOf(m)
	}
	created, err := s.CreateRecordsInOrder(ctx, meta, collection, in)
	if err != nil {
		return nil, err
	}
	out := make([]Record, len(created))
	for i := range created {
		out[i] = created[i].Record()
	}
	return out, nil
}

// CreateRecordsInOrder validates, encrypts and stores a batch of records
// atomically: one bad record rejects the batch and nothing is stored. It
// returns once the batch is durable, each record's fields in the order
// given. Values are always written under the collection's primary data
// key as the writer sees it: a batch encrypted under a key rotated since
// is encrypted again.
func (s *Service) CreateRecordsInOrder(ctx context.Context, meta RequestMeta, collection string, inputs []NewRecord) ([]CreatedRecord, error) {
	for attempt := 1; ; attempt++ {
		recs, err := s.createRecords(ctx, meta, collection, inputs)
		if errors.Is(err, errKeyRotated) && attempt < keyRetries {
			continue
		}
		return recs, err
	}
}

func (s *Service) createRecords(ctx context.Context, meta RequestMeta, collection string, inputs []NewRecord) ([]CreatedRecord, error) {
	if len(inputs) == 0 {
		return nil, invalid("empty_batch", "records must hold at least one record")
	}
	if len(inputs) > s.cfg.MaxBatchRecords {
		return nil, &Error{Kind: ErrTooLarge, Code: "batch_too_large", Message: fmt.Sprintf("a batch holds at most %d records", s.cfg.MaxBatchRecords)}
	}
	c, err := s.collection(collection)
	if err != nil {
		return nil, err
	}
	now := s.now()
	recs, err := prepareBatch(c, inputs)
	if err != nil {
		return nil, err
	}
	e, size := s.createEntry(meta, c, recs)
	// Count the values per data key, for key retirement.
	t := newTally()
	for i := range recs {
		for _, pf := range recs[i].fields {
			if id, ok := keys.KeyID(pf.cipher); ok {
				t.perKey[id]++
			}
		}
	}
	err = s.writer.apply(&mutation{entry: e, size: size, prepare: func(txn storage.Txn) error {
		for id := range t.perKey {
			if staleKey(c, id) {
				return reject(errKeyRotated)
			}
		}
		if err := s.drawFormatTokens(txn, recs); err != nil {
			return err
		}
		return writeCreated(txn, c.Name, recs, now, t)
	}})
	if err != nil {
		return nil, err
	}
	s.applyKnown(t.known)
	s.metrics.recordsWritten.Add(float64(len(recs)))
	return created(recs, now), nil
}

// createEntry is a create's audit entry (its records, and the fields it
// wrote in the collection's order) and about how many bytes the batch
// takes in a transaction.
func (s *Service) createEntry(meta RequestMeta, c *collection, recs []preparedRecord) (*AuditEntry, int) {
	e := s.newEntry(meta, "records.create")
	e.Collection = c.Name
	size := 256
	written := map[string]bool{}
	for _, r := range recs {
		e.RecordIDs = append(e.RecordIDs, r.id)
		size += 160 + len(r.id)
		for _, pf := range r.fields {
			size += 3*len(pf.field.Name) + len(pf.value) + len(pf.cipher) + 2*len(pf.token) + 200
			written[pf.field.Name] = true
		}
	}
	for _, f := range c.Fields {
		if written[f.Name] {
			e.Fields = append(e.Fields, f.Name)
		}
	}
	return e, size
}

// drawFormatTokens draws every format-preserving token of a batch in the
// writer's transaction, before anything is written, so a token space that
// runs out rejects this batch alone.
func (s *Service) drawFormatTokens(txn storage.Txn, recs []preparedRecord) error {
	taken := map[string]bool{}
	for i := range recs {
		for j := range recs[i].fields {
			pf := &recs[i].fields[j]
			if pf.field.Token != tokenizer.KindFormatPreserving {
				continue
			}
			tok, err := s.freeFormatToken(txn, pf.field.Format, pf.fpe, taken)
			if err != nil {
				return reject(invalidf(err, "record %d: field %q", i, pf.field.Name))
			}
			pf.token = tok
		}
	}
	return nil
}

// writeCreated writes a batch's records, what their fields keep outside
// them (token index, known values, plain index) and its counts per data
// key. The entries' keys and values are carved from one buffer.
func writeCreated(txn storage.Txn, collection string, recs []preparedRecord, now time.Time, t *tally) error {
	eb := &entryBuf{b: make([]byte, 0, entryBytes(collection, recs))}
	var sr storedRecord // encoded into eb: its fields are reused
	for i := range recs {
		r := &recs[i]
		sr = storedRecord{Created: now, Fields: sr.Fields[:0]}
		for j := range r.fields {
			pf := &r.fields[j]
			if pf.field.Sensitive {
				sr.Fields = append(sr.Fields, storedField{Name: pf.field.Name, Token: pf.token})
			} else {
				sr.Fields = append(sr.Fields, storedField{Name: pf.field.Name, Value: pf.value})
			}
			if err := setField(txn, eb, collection, r.id, pf, t); err != nil {
				return err
			}
		}
		key := eb.put(func(b []byte) []byte { return appendRecordKey(b, collection, r.id) })
		if err := txn.Set(key, eb.put(func(b []byte) []byte { return appendEncodedRecord(b, &sr) })); err != nil {
			return err
		}
	}
	return addKeyCounts(txn, collection, t.perKey)
}

// created is what a create answers for its prepared records: the
// records' fields share one allocation, and their quoted tokens another.
func created(recs []preparedRecord, now time.Time) []CreatedRecord {
	out := make([]CreatedRecord, len(recs))
	nfields, tokBytes := 0, 0
	for i := range recs {
		nfields += len(recs[i].fields)
		for _, pf := range recs[i].fields {
			tokBytes += len(pf.token) + 2
		}
	}
	fields := make([]FieldValue, 0, nfields)
	quoted := make([]byte, 0, tokBytes)
	for i, r := range recs {
		first := len(fields)
		for _, pf := range r.fields {
			v := pf.value
			if pf.field.Sensitive {
				start := len(quoted)
				quoted = jsontext.AppendString(quoted, pf.token)
				v = quoted[start:len(quoted):len(quoted)]
			}
			fields = append(fields, FieldValue{pf.field.Name, v})
		}
		out[i] = CreatedRecord{ID: r.id, Fields: fields[first:len(fields):len(fields)], CreatedAt: now}
	}
	return out
}

// invalidf wraps a token-space error as a conflict naming record and field.
func invalidf(err error, format string, args ...any) error {
	var e *Error
	if errors.As(err, &e) {
		return &Error{Kind: e.Kind, Code: e.Code, Message: fmt.Sprintf(format, args...) + ": " + e.Message}
	}
	return err
}

// freeFormatToken draws format-preserving tokens until one is free in the
// whole vault. It runs in the single writer's transaction, which sees every
// earlier reservation, including those of earlier requests in the same
// batch (taken holds this request's own draws).
func (s *Service) freeFormatToken(txn storage.Txn, f tokenizer.Format, value string, taken map[string]bool) (string, error) {
	for range maxTokenAttempts {
		tok, err := tokenizer.FormatPreserving(f, value)
		if err != nil {
			return "", err
		}
		if taken[tok] {
			continue
		}
		_, err = txn.Get(pointTokenKey(tok))
		if errors.Is(err, storage.ErrNotFound) {
			taken[tok] = true
			return tok, nil
		}
		if err != nil {
			return "", err
		}
		s.metrics.tokenCollisions.Inc()
	}
	return "", conflict("token_space_exhausted", "no free %s token after %d attempts; the format has too few possible tokens for this value", f, maxTokenAttempts)
}

// DeleteRecord removes a record and its token mappings: its tokens stop
// resolving at once. A deterministic token shared with other records keeps
// resolving for them.
func (s *Service) DeleteRecord(ctx context.Context, meta RequestMeta, collection, id string) error {
	schema, err := s.schema(collection)
	if err != nil {
		return err
	}
	e := s.newEntry(meta, "records.delete")
	e.Collection = collection
	e.RecordIDs = []string{id}
	t := newTally()
	err = s.writer.apply(&mutation{entry: e, size: 4096, prepare: func(txn storage.Txn) error {
		sr, err := loadRecord(txn, collection, id)
		if errors.Is(err, ErrNotFound) {
			return reject(err)
		}
		if err != nil {
			return err
		}
		for _, f := range sr.Fields {
			if err := dropField(txn, &schema, id, f, t); err != nil {
				return err
			}
		}
		if err := addKeyCounts(txn, collection, t.perKey); err != nil {
			return err
		}
		return txn.Delete(recordKey(collection, id))
	}})
	if err != nil {
		return err
	}
	s.applyKnown(t.known)
	s.log.Info("record deleted", "collection", collection, "record_id", id, "actor", actorID(meta.Actor))
	return nil
}
