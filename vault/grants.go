package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/google/uuid"

	"github.com/agentvault/agentvault/storage"
)

// Reveal says how a grant shows values.
type Reveal string

// Reveal modes. RevealNone shows the agent the named fields (sensitive
// ones as tokens) and reveals nothing.
const (
	RevealPlain  Reveal = "plain"
	RevealMasked Reveal = "masked"
	RevealNone   Reveal = "none"
)

// Grant lets one agent see named fields of one collection (plain fields
// as values, sensitive ones as tokens) and, unless its reveal is none,
// reveal the sensitive ones, for one purpose, until it expires, is revoked
// or is used up. Fields no live grant names are invisible to the agent.
type Grant struct {
	ID           string     `json:"id"`
	PrincipalID  string     `json:"principal_id"`
	Collection   string     `json:"collection"`
	Fields       []string   `json:"fields"`
	RecordIDs    []string   `json:"record_ids,omitempty"`
	Purpose      string     `json:"purpose"`
	Reveal       Reveal     `json:"reveal"`
	MaxUses      int        `json:"max_uses,omitempty"`
	Uses         int        `json:"uses"`
	ApprovalOver *int       `json:"approval_over,omitempty"`
	CreatedAt    time.Time  `json:"created_at"`
	CreatedBy    string     `json:"created_by"`
	ExpiresAt    time.Time  `json:"expires_at"`
	RevokedAt    *time.Time `json:"revoked_at,omitempty"`
	State        string     `json:"state"`
}

// Grant states, derived from the grant and the clock.
const (
	GrantLive      = "live"
	GrantExpired   = "expired"
	GrantRevoked   = "revoked"
	GrantExhausted = "exhausted"
)

func (g *Grant) state(now time.Time) string {
	switch {
	case g.RevokedAt != nil:
		return GrantRevoked
	case !now.Before(g.ExpiresAt):
		return GrantExpired
	case g.MaxUses > 0 && g.Uses >= g.MaxUses:
		return GrantExhausted
	}
	return GrantLive
}

// GrantRequest is what an admin asks for. Exactly one of TTL and
// ExpiresAt sets the expiry.
type GrantRequest struct {
	PrincipalID  string     `json:"principal_id"`
	Collection   string     `json:"collection"`
	Fields       []string   `json:"fields"`
	RecordIDs    []string   `json:"record_ids,omitempty"`
	Purpose      string     `json:"purpose"`
	TTL          string     `json:"ttl,omitempty"`
	ExpiresAt    *time.Time `json:"expires_at,omitempty"`
	MaxUses      int        `json:"max_uses,omitempty"`
	Reveal       Reveal     `json:"reveal,omitempty"`
	ApprovalOver *int       `json:"approval_over,omitempty"`
}

// Limits on a grant's scope.
const (
	MaxGrantRecords = 1000
)

func grantKey(id string) []byte { return []byte("g/" + id) }

// CreateGrant validates and stores a grant.
func (s *Service) CreateGrant(ctx context.Context, meta RequestMeta, req GrantRequest) (*Grant, error) {
	now := s.now()
	s.pmu.RLock()
	p, ok := s.byID[req.PrincipalID]
	s.pmu.RUnlock()
	switch {
	case !ok:
		return nil, invalid("unknown_principal", "no principal with id %q", req.PrincipalID)
	case !p.Active():
		return nil, invalid("revoked_principal", "principal %q is revoked", req.PrincipalID)
	case !p.Has(RoleAgent):
		return nil, invalid("not_an_agent", "principal %q does not have the agent role; grants are for agents", req.PrincipalID)
	}
	c, err := s.schema(req.Collection)
	if errors.Is(err, ErrNotFound) {
		return nil, invalid("unknown_collection", "no collection named %q", req.Collection)
	} else if err != nil {
		return nil, err
	}
	if len(req.Fields) == 0 {
		return nil, invalid("invalid_fields", "fields must name at least one field")
	}
	for i, f := range req.Fields {
		if _, ok := c.Field(f); !ok {
			return nil, invalid("unknown_field", "collection %q has no field %q", c.Name, f)
		}
		if slices.Contains(req.Fields[:i], f) {
			return nil, invalid("invalid_fields", "field %q is listed twice", f)
		}
	}
	if req.RecordIDs != nil && len(req.RecordIDs) == 0 {
		return nil, invalid("invalid_record_ids", "record_ids is empty: leave it out to cover every record, or name at least one")
	}
	if len(req.RecordIDs) > MaxGrantRecords {
		return nil, invalid("invalid_record_ids", "a grant names at most %d records", MaxGrantRecords)
	}
	for _, id := range req.RecordIDs {
		if _, err := uuid.Parse(id); err != nil {
			return nil, invalid("invalid_record_ids", "record id %q is not a record id", id)
		}
	}
	if err := checkPurpose(req.Purpose); err != nil {
		return nil, err
	}
	var expires time.Time
	switch {
	case req.TTL != "" && req.ExpiresAt != nil:
		return nil, invalid("invalid_expiry", "give ttl or expires_at, not both")
	case req.TTL != "":
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 {
			return nil, invalid("invalid_ttl", "ttl must be a positive duration such as \"1h\" or \"15m\"")
		}
		expires = now.Add(d)
	case req.ExpiresAt != nil:
		if !req.ExpiresAt.After(now) {
			return nil, invalid("invalid_expiry", "expires_at must be in the future")
		}
		expires = req.ExpiresAt.UTC()
	default:
		return nil, invalid("invalid_ttl", "ttl (or expires_at) is required")
	}
	if req.MaxUses < 0 {
		return nil, invalid("invalid_max_uses", "max_uses must be zero (unlimited) or positive")
	}
	switch req.Reveal {
	case "":
		req.Reveal = RevealMasked
	case RevealPlain, RevealMasked, RevealNone:
	default:
		return nil, invalid("invalid_reveal", "reveal must be plain, masked or none")
	}
	if req.ApprovalOver != nil && *req.ApprovalOver < 0 {
		return nil, invalid("invalid_approval_over", "approval_over must be zero or positive")
	}
	g := &Grant{
		ID: uuid.NewString(), PrincipalID: p.ID, Collection: c.Name, Fields: slices.Clone(req.Fields),
		RecordIDs: slices.Clone(req.RecordIDs), Purpose: req.Purpose, Reveal: req.Reveal, MaxUses: req.MaxUses,
		ApprovalOver: req.ApprovalOver, CreatedAt: now, CreatedBy: actorID(meta.Actor), ExpiresAt: expires,
	}
	e := s.newEntry(meta, "grant.create")
	e.Collection, e.Fields, e.RecordIDs, e.Purpose, e.GrantID, e.Target = g.Collection, g.Fields, nonNil(g.RecordIDs), g.Purpose, g.ID, g.PrincipalID
	if err := s.putGrant(g, e, nil); err != nil {
		return nil, err
	}
	g.State = g.state(now)
	return g, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// putGrant stores g with its audit entry. check, if set, runs inside the
// writer against the stored grant first.
func (s *Service) putGrant(g *Grant, e *AuditEntry, check func(stored *Grant) error) error {
	err := s.writer.apply(&mutation{entry: e, size: 2048 + 40*len(g.RecordIDs), prepare: func(txn storage.Txn) error {
		if check != nil {
			stored, err := readGrant(txn, g.ID)
			if err != nil {
				return err
			}
			if err := check(stored); err != nil {
				return reject(err)
			}
			g.Uses = stored.Uses
		}
		if err := bumpGen(txn); err != nil {
			return err
		}
		return setGrant(txn, g)
	}})
	if err != nil {
		return err
	}
	s.gmu.Lock()
	s.cacheGrant(g)
	s.gmu.Unlock()
	return nil
}

// cacheGrant puts a copy of g in the in-memory grant maps; s.gmu is held.
// Grants are created in time order, so appending keeps each agent's list
// oldest first.
func (s *Service) cacheGrant(g *Grant) {
	if cur, ok := s.grants[g.ID]; ok {
		*cur = *g
		return
	}
	cp := *g
	s.grants[g.ID] = &cp
	s.byAgent[g.PrincipalID] = append(s.byAgent[g.PrincipalID], &cp)
}

func readGrant(txn storage.Txn, id string) (*Grant, error) {
	if bt, ok := txn.(*batchTxn); ok {
		if g := bt.grants[id]; g != nil {
			return g, nil
		}
	}
	item, err := txn.Get(grantKey(id))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, reject(notFound("grant_not_found", "no grant with id %q", id))
	}
	if err != nil {
		return nil, err
	}
	var g Grant
	if err := item.Value(func(v []byte) error { return json.Unmarshal(v, &g) }); err != nil {
		return nil, fmt.Errorf("decode grant %s: %w", id, err)
	}
	if bt, ok := txn.(*batchTxn); ok {
		bt.cacheGrant(&g, false)
	}
	return &g, nil
}

// setGrant stores g in txn: in a writer batch, once at its end however
// many of its mutations change it (each detokenize spends a use).
func setGrant(txn storage.Txn, g *Grant) error {
	if bt, ok := txn.(*batchTxn); ok {
		c := *g // the batch's own copy: later mutations change it, not the caller's
		bt.cacheGrant(&c, true)
		return nil
	}
	b, err := json.Marshal(g)
	if err != nil {
		return err
	}
	return txn.Set(grantKey(g.ID), b)
}

// batchTxn is a writer batch's transaction, holding the grants its
// mutations read decoded once, and those they change written once, when
// the batch commits (flush). Every read and write of a grant in the
// writer goes through readGrant and setGrant.
type batchTxn struct {
	storage.WriteTxn
	grants map[string]*Grant // by id, as the batch has them
	dirty  map[string]bool   // ids of those changed, to write at flush
}

func (bt *batchTxn) cacheGrant(g *Grant, changed bool) {
	if bt.grants == nil {
		bt.grants, bt.dirty = map[string]*Grant{}, map[string]bool{}
	}
	bt.grants[g.ID] = g
	if changed {
		bt.dirty[g.ID] = true
	}
}

// flush writes the grants the batch changed.
func (bt *batchTxn) flush() error {
	for id := range bt.dirty {
		b, err := json.Marshal(bt.grants[id])
		if err != nil {
			return err
		}
		if err := bt.Set(grantKey(id), b); err != nil {
			return err
		}
	}
	clear(bt.dirty)
	return nil
}

// GrantFilter selects grants; zero values match all.
type GrantFilter struct {
	PrincipalID string
	Collection  string
	State       string // live, expired, revoked, exhausted
}

// ListGrants returns grants, newest first.
func (s *Service) ListGrants(ctx context.Context, f GrantFilter) ([]Grant, error) {
	switch f.State {
	case "", GrantLive, GrantExpired, GrantRevoked, GrantExhausted:
	default:
		return nil, invalid("invalid_state", "state must be live, expired, revoked or exhausted")
	}
	now := s.now()
	s.gmu.RLock()
	out := make([]Grant, 0, len(s.grants))
	for _, g := range s.grants {
		cp := *g
		cp.State = cp.state(now)
		if (f.PrincipalID == "" || cp.PrincipalID == f.PrincipalID) && (f.Collection == "" || cp.Collection == f.Collection) && (f.State == "" || cp.State == f.State) {
			out = append(out, cp)
		}
	}
	s.gmu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.After(out[j].CreatedAt) })
	return out, nil
}

// RevokeGrant ends a grant at once: detokenize requests decided after this
// returns never use it.
func (s *Service) RevokeGrant(ctx context.Context, meta RequestMeta, id string) error {
	s.gmu.RLock()
	g, ok := s.grants[id]
	var cp Grant
	if ok {
		cp = *g
	}
	s.gmu.RUnlock()
	if !ok {
		return notFound("grant_not_found", "no grant with id %q", id)
	}
	if cp.RevokedAt != nil {
		return nil
	}
	now := s.now()
	cp.RevokedAt = &now
	e := s.newEntry(meta, "grant.revoke")
	e.GrantID, e.Collection, e.Target = id, cp.Collection, cp.PrincipalID
	return s.putGrant(&cp, e, func(*Grant) error { return nil })
}

// readGrants reads every grant, oldest first.
func readGrants(txn storage.Txn) ([]*Grant, error) {
	var all []*Grant
	it := txn.NewIterator(storage.IterOptions{Prefix: []byte("g/"), PrefetchValues: true})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		var g Grant
		if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &g) }); err != nil {
			return nil, fmt.Errorf("load grant %s: %w", it.Item().Key(), err)
		}
		all = append(all, &g)
	}
	slices.SortFunc(all, func(a, b *Grant) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return all, nil
}
