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
)

// What a principal may see of records, and how reads are recorded.
//
// Writers and admins see whole records (sensitive fields as tokens). An
// agent sees a collection, a record and a field only through a live grant
// of its own for the purpose it gives: plain fields as values, sensitive
// ones as tokens, every other field absent, and a record outside every
// record-scoped grant answers as one that does not exist. Every read of
// records is written to the audit log before it is answered; if the entry
// cannot be written, the read fails and returns nothing.

// view is what one principal may see of one collection for one purpose.
type view struct {
	all    bool     // a writer or admin: every field of every record
	grants []*Grant // an agent: its live grants on the collection for the purpose
}

// fullView reports whether p sees collections and records whole rather
// than through grants: everyone but a principal whose only way to data is
// the agent role (a writer or admin that is also an agent sees all).
func fullView(p *Principal) bool {
	return p == nil || p.Has(RoleWriter) || p.Has(RoleAdmin) || !p.Has(RoleAgent)
}

// viewOf works out what the actor may see of a collection for a purpose.
// An agent must give its purpose. An empty view means the collection is
// invisible to it.
func (s *Service) viewOf(actor *Principal, collection, purpose string) (view, error) {
	if fullView(actor) {
		if purpose != "" {
			if err := checkPurpose(purpose); err != nil {
				return view{}, err
			}
		}
		return view{all: true}, nil
	}
	if purpose == "" {
		return view{}, invalid("purpose_required", "agents give the purpose of every read (?purpose=)")
	}
	if err := checkPurpose(purpose); err != nil {
		return view{}, err
	}
	now := s.now()
	var v view
	for _, g := range s.agentGrants(actor.ID) {
		if g.Collection == collection && g.Purpose == purpose && g.state(now) == GrantLive {
			v.grants = append(v.grants, g)
		}
	}
	return v, nil
}

// fieldsFor returns the fields the view shows of a record, and false when
// the record is invisible (no grant covers it).
func (v view) fieldsFor(recordID string) (map[string]bool, bool) {
	if v.all {
		return nil, true
	}
	var shown map[string]bool
	for _, g := range v.grants {
		if g.RecordIDs != nil && !slices.Contains(g.RecordIDs, recordID) {
			continue
		}
		if shown == nil {
			shown = map[string]bool{}
		}
		for _, f := range g.Fields {
			shown[f] = true
		}
	}
	return shown, shown != nil
}

// GetRecord returns a record as the actor may see it, for a purpose
// (agents must give one), and records the read in the audit log first.
// For an agent, a record that does not exist, one outside its grants, and
// a collection it has no grant on (or that does not exist) are answered
// alike, after an audit entry alike.
func (s *Service) GetRecord(ctx context.Context, meta RequestMeta, collection, id, purpose string) (*Record, error) {
	r, err := s.openRead(meta, "records.read", collection, purpose)
	if err != nil {
		return nil, err
	}
	r.entry.RecordIDs = []string{id}
	if r.hidden {
		return nil, r.refuse(noGrant, 1024, r.collectionNotFound())
	}
	rec, err := s.readRecord(collection, id)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	shown, visible := r.view.fieldsFor(id)
	switch {
	case err != nil:
		r.entry.Decision = StatusNotFound
		return nil, r.answer(1024, err)
	case !visible:
		return nil, r.refuse("the record is outside every grant of this agent for this purpose", 1024,
			notFound("record_not_found", "no record %q in collection %q", id, collection))
	}
	for name := range rec.Fields {
		if shown != nil && !shown[name] {
			delete(rec.Fields, name)
			continue
		}
		r.entry.Fields = append(r.entry.Fields, name)
	}
	slices.Sort(r.entry.Fields)
	if err := r.answer(1024, nil); err != nil {
		return nil, err
	}
	return rec, nil
}

// recordRead is one read of records on its way in. Every read of records,
// whatever asks (GetRecord, ListRecords, SearchRecords; over HTTP or MCP),
// starts at openRead and ends in refuse or answer, so the grant check and
// the fail-closed audit entry are the same for all of them.
type recordRead struct {
	s      *Service
	view   view
	entry  *AuditEntry
	hidden bool // the collection is missing or the agent has no live grant on it for the purpose
}

// noGrant is the audit reason for a read of a collection the agent has no
// live grant on for its purpose (or that does not exist).
const noGrant = "no live grant of this agent on this collection for this purpose"

// openRead checks the collection and works out the actor's view of it for
// the purpose, and starts the read's audit entry. For an agent, a missing
// collection is not an error here: it is hidden, answered later exactly
// like one it has no grant on, after an audit entry alike.
func (s *Service) openRead(meta RequestMeta, action, collection, purpose string) (*recordRead, error) {
	_, schemaErr := s.schema(collection)
	if schemaErr != nil && (fullView(meta.Actor) || !errors.Is(schemaErr, ErrNotFound)) {
		return nil, schemaErr
	}
	v, err := s.viewOf(meta.Actor, collection, purpose)
	if err != nil {
		return nil, err
	}
	e := s.newEntry(meta, action)
	e.Collection, e.Purpose = collection, purpose
	return &recordRead{s: s, view: v, entry: e, hidden: schemaErr != nil || (!v.all && len(v.grants) == 0)}, nil
}

// collectionNotFound is the answer to a hidden collection.
func (r *recordRead) collectionNotFound() error {
	return notFound("collection_not_found", "no collection %q", r.entry.Collection)
}

// refuse records the read as denied for reason and answers with refusal;
// if the entry cannot be written, that error is the answer.
func (r *recordRead) refuse(reason string, size int, refusal error) error {
	r.entry.Decision, r.entry.Reason = DecisionDenied, reason
	return r.answer(size, refusal)
}

// answer writes the read's audit entry (size is its estimated encoded
// size) and then answers with result; a read whose entry cannot be
// written fails and returns nothing.
func (r *recordRead) answer(size int, result error) error {
	m := &mutation{entry: r.entry, size: size, auditOnly: true}
	if !r.view.all && len(r.view.grants) > 0 {
		m.prepare = r.recheckGrants
	}
	if err := r.s.writer.apply(m); err != nil {
		return err
	}
	return result
}

// errGrantChanged refuses an agent's read decided on a grant that ended
// (revoked, on this node or another, or expired) before the read's entry
// was written; asked again, the read sees the grants as they are.
var errGrantChanged = &Error{Kind: ErrConflict, Code: "grant_changed", Message: "a grant this read relied on was revoked or expired meanwhile; ask again"}

// recheckGrants, in the writer's transaction, refuses the read if a
// grant its view relied on is no longer live in the store.
func (r *recordRead) recheckGrants(txn storage.Txn) error {
	now := r.s.now()
	for _, g := range r.view.grants {
		stored, err := readGrant(txn, g.ID)
		var skip errSkip
		switch {
		case errors.As(err, &skip):
			return reject(errGrantChanged)
		case err != nil:
			return err
		case stored.state(now) != GrantLive:
			return reject(errGrantChanged)
		}
	}
	return nil
}

// hideCollection answers an agent about a collection that does not exist
// exactly as about one it has no grant on.
func (s *Service) hideCollection(actor *Principal, err error) error {
	if errors.Is(err, ErrNotFound) && !fullView(actor) {
		return notFound("collection_not_found", "no collection")
	}
	return err
}

// readRecord reads a stored record whole, sensitive fields as tokens,
// without any check or audit entry: callers decide and record.
func (s *Service) readRecord(collection, id string) (*Record, error) {
	var sr storedRecord
	err := s.store.View(func(txn storage.Txn) (err error) {
		sr, err = loadRecord(txn, collection, id)
		return err
	})
	if err != nil {
		return nil, err
	}
	rec := recordFrom(id, sr, nil)
	return &rec, nil
}

// loadRecord reads a stored record in txn; a missing one is
// record_not_found.
func loadRecord(txn storage.Txn, collection, id string) (storedRecord, error) {
	item, err := txn.Get(recordKey(collection, id))
	if errors.Is(err, storage.ErrNotFound) {
		return storedRecord{}, notFound("record_not_found", "no record %q in collection %q", id, collection)
	}
	if err != nil {
		return storedRecord{}, err
	}
	var sr storedRecord
	err = item.Value(func(v []byte) (err error) { sr, err = decodeRecord(v); return err })
	return sr, err
}

// visibleSchema cuts a schema down to what the view shows: for an agent,
// the fields its grants name (in any record); nil when it shows nothing.
func (v view) visibleSchema(c Collection) *Collection {
	if v.all {
		return &c
	}
	shown := map[string]bool{}
	for _, g := range v.grants {
		for _, f := range g.Fields {
			shown[f] = true
		}
	}
	if len(shown) == 0 {
		return nil
	}
	out := c
	out.Fields = nil
	for _, f := range c.Fields {
		if shown[f.Name] {
			out.Fields = append(out.Fields, f)
		}
	}
	return &out
}

// schemaView is viewOf for schema reads: an agent may leave the purpose
// out, and then sees what all its live grants show.
func (s *Service) schemaView(actor *Principal, collection, purpose string) (view, error) {
	if fullView(actor) || purpose != "" {
		return s.viewOf(actor, collection, purpose)
	}
	now := s.now()
	var v view
	for _, g := range s.agentGrants(actor.ID) {
		if g.Collection == collection && g.state(now) == GrantLive {
			v.grants = append(v.grants, g)
		}
	}
	return v, nil
}

// Listing limits.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
	// auditIDsUpTo is how many record ids a read's audit entry lists; a
	// larger page is recorded by its count and the SHA-256 of its ids.
	auditIDsUpTo = 100
)

// ListRecords pages through a collection in key order (record ids are
// UUIDv7, so roughly creation order), as the actor may see it: after is
// the last id of the previous page ("" for the first), and the answer's
// next is the cursor for the one after ("" on the last page). A record
// that exists for the whole listing is returned exactly once, whatever is
// inserted meanwhile. An agent sees only records its grants cover, with
// the fields they name; a page is audited like a read, before it is
// answered.
func (s *Service) ListRecords(ctx context.Context, meta RequestMeta, collection, purpose string, limit int, after string) ([]Record, string, error) {
	switch {
	case limit == 0:
		limit = DefaultPageSize
	case limit < 0 || limit > MaxPageSize:
		return nil, "", invalid("invalid_limit", "limit is 1 to %d", MaxPageSize)
	}
	if after != "" {
		if _, err := uuid.Parse(after); err != nil {
			return nil, "", invalid("invalid_cursor", "after must be the next cursor of an earlier page")
		}
	}
	r, err := s.openRead(meta, "records.read", collection, purpose)
	if err != nil {
		return nil, "", err
	}
	if r.hidden {
		return nil, "", r.refuse(noGrant, 1024, r.collectionNotFound())
	}
	recs, next, err := s.page(ctx, collection, r.view, limit, after)
	if err != nil {
		return nil, "", err
	}
	fillReadEntry(r.entry, recs)
	if err := r.answer(2048+40*min(len(recs), auditIDsUpTo), nil); err != nil {
		return nil, "", err
	}
	return recs, next, nil
}

// page reads up to limit visible records after the cursor. An agent whose
// grants all name records reads just those; otherwise the collection's
// keys are walked in order.
func (s *Service) page(ctx context.Context, collection string, v view, limit int, after string) ([]Record, string, error) {
	recs := []Record{}
	next := ""
	add := func(id string, raw []byte) (bool, error) {
		shown, visible := v.fieldsFor(id)
		if !visible {
			return true, nil
		}
		if len(recs) == limit {
			next = recs[len(recs)-1].ID
			return false, nil
		}
		sr, err := decodeRecord(raw)
		if err != nil {
			return false, err
		}
		recs = append(recs, recordFrom(id, sr, shown))
		return true, nil
	}
	err := s.store.View(func(txn storage.Txn) error {
		if ids, ok := v.namedRecords(); ok {
			for _, id := range ids {
				if id <= after {
					continue
				}
				item, err := txn.Get(recordKey(collection, id))
				if errors.Is(err, storage.ErrNotFound) {
					continue
				}
				if err != nil {
					return err
				}
				raw, err := item.ValueCopy(nil)
				if err != nil {
					return err
				}
				if more, err := add(id, raw); err != nil || !more {
					return err
				}
			}
			return nil
		}
		prefix := recordKey(collection, "")
		it := txn.NewIterator(storage.IterOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: min(limit+1, 256)})
		defer it.Close()
		start := prefix
		if after != "" {
			start = append(recordKey(collection, after), 0)
		}
		for it.Seek(start); it.ValidForPrefix(prefix); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			raw, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			if more, err := add(string(it.Item().Key()[len(prefix):]), raw); err != nil || !more {
				return err
			}
		}
		return nil
	})
	return recs, next, err
}

// namedRecords returns, sorted, the record ids an agent's grants are
// limited to, and false when any grant covers the whole collection (or
// the view is a writer's).
func (v view) namedRecords() ([]string, bool) {
	if v.all {
		return nil, false
	}
	var ids []string
	for _, g := range v.grants {
		if g.RecordIDs == nil {
			return nil, false
		}
		ids = append(ids, g.RecordIDs...)
	}
	slices.Sort(ids)
	return slices.Compact(ids), true
}

// recordFrom builds a record as a view shows it: shown nil means every
// field.
func recordFrom(id string, sr storedRecord, shown map[string]bool) Record {
	rec := Record{ID: id, Fields: make(map[string]json.RawMessage, len(sr.Fields)), CreatedAt: sr.Created}
	for _, f := range sr.Fields {
		if shown != nil && !shown[f.Name] {
			continue
		}
		if f.sensitive() {
			rec.Fields[f.Name], _ = json.Marshal(f.Token)
		} else {
			rec.Fields[f.Name] = f.Value
		}
	}
	return rec
}

// fillReadEntry names what a page returned: the record ids (or, for a
// large page, their count and the SHA-256 of the ids joined by newlines)
// and every field returned.
func fillReadEntry(e *AuditEntry, recs []Record) {
	fields := map[string]bool{}
	ids := make([]string, len(recs))
	for i, r := range recs {
		ids[i] = r.ID
		for f := range r.Fields {
			fields[f] = true
		}
	}
	e.Fields = sortedKeys(fields)
	if len(ids) <= auditIDsUpTo {
		e.RecordIDs = ids
		e.Reason = fmt.Sprintf("%d records", len(ids))
		return
	}
	sum := sha256.Sum256([]byte(strings.Join(ids, "\n")))
	e.Reason = fmt.Sprintf("%d records, sha256 of their ids (one per line): %s", len(ids), hex.EncodeToString(sum[:]))
}
