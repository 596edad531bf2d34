package vault

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/agentvault/agentvault/keys"
	"github.com/agentvault/agentvault/storage"
	"github.com/agentvault/agentvault/tokenizer"
)

// MaxDetokenizeTokens bounds one detokenize request.
const MaxDetokenizeTokens = 1000

// Detokenize statuses.
const (
	StatusOK       = "ok"
	StatusMasked   = "masked"
	StatusDenied   = "denied"
	StatusPending  = "pending_approval"
	StatusNotFound = "not_found"
)

// DetokenizeRequest asks for the values behind tokens, for a purpose.
type DetokenizeRequest struct {
	Tokens     []string `json:"tokens"`
	Purpose    string   `json:"purpose"`
	ApprovalID string   `json:"approval_id,omitempty"`
}

// DetokenizeResult is the answer for one token, in request order.
type DetokenizeResult struct {
	Token      string          `json:"token"`
	Status     string          `json:"status"`
	Value      json.RawMessage `json:"value,omitempty"`
	Reason     string          `json:"reason,omitempty"`
	ApprovalID string          `json:"approval_id,omitempty"`
}

// Reasons given for denials. They name rules, never values.
const (
	reasonNoGrant   = "no grant of this agent covers this collection and field"
	reasonPurpose   = "no grant covers this field for this purpose"
	reasonRecord    = "the record is outside every grant for this field"
	reasonGrantGone = "the grant was revoked, expired or used up"
	reasonTokenOnly = "the grant shows this field's token only (reveal: none)"
)

// detokItem is one distinct token of a request and what is decided for it.
type detokItem struct {
	token string
	ref   TokenRef
	grant *Grant
	value json.RawMessage
	rule  string // the approval rule a fresh reveal trips, if any
	// approved: the redeemed approval covers this token, at this place and
	// under this grant, so a person has already decided its rules.
	approved bool
	// held: the token waits for the approval this request opens.
	held bool
	dec  TokenDecision
}

// detokPlan is a request's distinct tokens (each resolved, checked and
// decrypted once, however often the request repeats it) and, for each
// position of the request, which of them it holds.
type detokPlan struct {
	items []detokItem
	at    []int
}

// Detokenize reveals what the agent's live grants allow, and nothing else.
//
// If revealing any value would trip an approval rule (a field that always
// needs approval, a number above its field's approval_above, more values
// than a grant's approval_over), the request is held: every token that
// could be revealed answers pending_approval with one approval id, and no
// grant use is spent. The approval covers exactly those tokens, each at the
// record and under the grant the approver is shown. Once a different
// person approves, the agent sends the same tokens and purpose again with
// approval_id, once, within the redemption window: the covered tokens are
// revealed under the same grants (checked again then), and every other
// token of the request is decided as in a fresh request, rules and all.
//
// The cost of a request is bounded by its size and the agent's grants, not
// by the data: repeated tokens are resolved once, and a deterministic
// token shared by many records is looked up only where a grant could let
// the agent see it.
//
// The decision for every token is written to the audit log, with the
// grants' use counts and the approval's state, in one durable transaction
// before anything is returned: if that write fails, the request fails and
// reveals nothing. Grants and the approval are checked against the clock
// read inside that transaction.
func (s *Service) Detokenize(ctx context.Context, meta RequestMeta, req DetokenizeRequest) ([]DetokenizeResult, error) {
	if err := req.validate(); err != nil {
		return nil, err
	}
	hasher, err := s.tokenHasher()
	if err != nil {
		return nil, err
	}
	plan, err := newDetokPlan(req.Tokens, hasher)
	if err != nil {
		return nil, err
	}
	mine := s.agentGrants(actorID(meta.Actor))
	var approval *storedApproval
	err = s.store.View(func(txn storage.Txn) error {
		now := s.now()
		if req.ApprovalID != "" {
			var err error
			if approval, err = readApproval(txn, req.ApprovalID); err != nil {
				return err
			}
			if err := checkRedemption(approval, meta, req, plan, now); err != nil {
				return err
			}
		}
		return s.resolveItems(txn, plan, mine, req.Purpose, approval, now)
	})
	if err != nil {
		return nil, err
	}
	plan.countPerGrant()
	created, spent, err := s.commitDetokenize(meta, req, plan, approval)
	if err != nil {
		return nil, err
	}
	if created != nil && s.cfg.OnApproval != nil {
		s.cfg.OnApproval("approval.requested", created.Approval)
	}
	s.gmu.Lock()
	for id, g := range spent {
		if cur, ok := s.grants[id]; ok && g.Uses > cur.Uses {
			cur.Uses = g.Uses
		}
	}
	s.gmu.Unlock()
	return s.detokenizeResults(req.Tokens, plan, created), nil
}

func (req *DetokenizeRequest) validate() error {
	switch {
	case len(req.Tokens) == 0:
		return invalid("empty_tokens", "tokens must hold at least one token")
	case len(req.Tokens) > MaxDetokenizeTokens:
		return &Error{Kind: ErrTooLarge, Code: "too_many_tokens", Message: "a request holds at most " + strconv.Itoa(MaxDetokenizeTokens) + " tokens"}
	}
	return checkPurpose(req.Purpose)
}

// agentGrants copies the agent's grants, oldest first.
func (s *Service) agentGrants(agentID string) []*Grant {
	s.gmu.RLock()
	defer s.gmu.RUnlock()
	mine := make([]*Grant, len(s.byAgent[agentID]))
	for i, g := range s.byAgent[agentID] {
		cp := *g
		mine[i] = &cp
	}
	return mine
}

// newDetokPlan folds repeated tokens into one item each and computes each
// distinct token's keyed hash (the form tokens take in the audit log).
func newDetokPlan(tokens []string, hasher *keys.IndexKey) (*detokPlan, error) {
	p := &detokPlan{at: make([]int, len(tokens))}
	seen := make(map[string]int, len(tokens))
	for i, tok := range tokens {
		j, ok := seen[tok]
		if !ok {
			h, err := hasher.Compute([]byte(tok), 16)
			if err != nil {
				return nil, err
			}
			j = len(p.items)
			seen[tok] = j
			p.items = append(p.items, detokItem{token: tok, dec: TokenDecision{TokenHash: hex.EncodeToString(h)}})
		}
		p.at[i] = j
	}
	return p, nil
}

// resolveItems finds each distinct token's place and the grant that lets
// the agent see it, then decrypts what a grant covers and notes the
// approval rule its value trips.
func (s *Service) resolveItems(txn storage.Txn, plan *detokPlan, mine []*Grant, purpose string, approval *storedApproval, now time.Time) error {
	// Seeks to a shared token's few entries: a short page each (a store
	// may otherwise read a long run of keys past them). Made when the
	// first shared token needs it: a point token is one Get.
	var it storage.Iterator
	defer func() {
		if it != nil {
			it.Close()
		}
	}()
	iter := func() storage.Iterator {
		if it == nil {
			it = txn.NewIterator(storage.IterOptions{PrefetchValues: false, PrefetchSize: 4})
		}
		return it
	}
	for i := range plan.items {
		item := &plan.items[i]
		if _, err := tokenizer.ParseToken(item.token); err != nil {
			item.dec.Decision = StatusNotFound
			continue
		}
		var ref TokenRef
		var g *Grant
		var reason string
		var err error
		if covered := approval.covering(item.dec.TokenHash); covered != nil {
			ref, g, reason, err = resolveApproved(txn, item.token, covered, mine, now)
			item.approved = g != nil
		} else {
			ref, g, reason, err = resolveForAgent(txn, iter, item.token, mine, purpose, now)
		}
		if err != nil {
			return err
		}
		if ref.Collection == "" {
			item.dec.Decision = StatusNotFound
			continue
		}
		item.ref = ref
		item.dec.Collection, item.dec.Field, item.dec.RecordID = ref.Collection, ref.Field, ref.RecordID
		if g == nil {
			item.dec.Decision, item.dec.Reason = StatusDenied, reason
			continue
		}
		if err := s.openItem(txn, item, g); err != nil {
			return err
		}
	}
	return nil
}

// openItem decrypts a covered item's value and notes the approval rule a
// fresh reveal of it trips.
func (s *Service) openItem(txn storage.Txn, item *detokItem, g *Grant) error {
	v, err := s.decryptFieldIn(txn, item.ref)
	if errors.Is(err, keys.ErrDecrypt) {
		s.log.Error("stored ciphertext failed its integrity check", "collection", item.ref.Collection, "record_id", item.ref.RecordID, "field", item.ref.Field)
		item.approved = false
		item.dec.Decision, item.dec.Reason = StatusDenied, "the stored value failed its integrity check"
		return nil
	}
	if err != nil {
		return err
	}
	c, err := s.collectionIn(txn, item.ref.Collection)
	if err != nil {
		return err
	}
	if fd, ok := c.Field(item.ref.Field); ok && !item.approved {
		item.rule = approvalRule(fd, v)
	}
	item.grant, item.value = g, v
	item.dec.GrantID = g.ID
	return nil
}

// resolveApproved finds an approved token at the place the approver was
// shown, under the grant it was approved under, if that grant is still
// live. A token that no longer stands for that place is not found.
func resolveApproved(txn storage.Txn, token string, covered *approvedItem, mine []*Grant, now time.Time) (TokenRef, *Grant, string, error) {
	ref, ok, err := lookupAt(txn, token, covered.Collection, covered.RecordID, covered.Field)
	if err != nil || !ok {
		return TokenRef{}, nil, "", err
	}
	for _, g := range mine {
		if g.ID == covered.GrantID {
			if g.state(now) != GrantLive {
				break
			}
			return ref, g, "", nil
		}
	}
	return ref, nil, reasonGrantGone, nil
}

// resolveForAgent finds where a token's value lives and the agent's oldest
// live grant that covers it for the purpose. Without a grant it says which
// part was missing. A ref with no collection means the token stands for
// nothing.
//
// A deterministic token may stand for many records; only the first is
// read, plus one point lookup per record a record-scoped grant names, so
// no request scans records the agent cannot see.
func resolveForAgent(txn storage.Txn, iter func() storage.Iterator, token string, mine []*Grant, purpose string, now time.Time) (TokenRef, *Grant, string, error) {
	if !isShared(token) {
		ref, ok, err := lookupPoint(txn, token)
		if err != nil || !ok {
			return TokenRef{}, nil, "", err
		}
		g, reason := pickGrant(mine, ref, purpose, now)
		return ref, g, reason, nil
	}
	first, ok, err := firstShared(iter(), token)
	if err != nil || !ok {
		return TokenRef{}, nil, "", err
	}
	reason := reasonNoGrant
	for _, g := range mine {
		r := grantRefusal(g, first, purpose, now)
		if r == "" {
			return first, g, "", nil
		}
		if r == reasonRecord {
			// A live, record-scoped grant on the token's field: look for
			// the token in each record it names.
			for _, id := range g.RecordIDs {
				ref, ok, err := lookupAt(txn, token, first.Collection, id, first.Field)
				if err != nil {
					return TokenRef{}, nil, "", err
				}
				if ok {
					return ref, g, "", nil
				}
			}
		}
		reason = moreSpecific(reason, r)
	}
	return first, nil, reason, nil
}

// grantRefusal says why g does not let its agent see ref for purpose, or
// "" when it does.
func grantRefusal(g *Grant, ref TokenRef, purpose string, now time.Time) string {
	switch {
	case g.Collection != ref.Collection || !slices.Contains(g.Fields, ref.Field):
		return reasonNoGrant
	case g.Purpose != purpose:
		return reasonPurpose
	case g.Reveal == RevealNone:
		return reasonTokenOnly
	}
	if st := g.state(now); st != GrantLive {
		return "the grant for this field is " + st
	}
	if g.RecordIDs != nil && !slices.Contains(g.RecordIDs, ref.RecordID) {
		return reasonRecord
	}
	return ""
}

// moreSpecific keeps the more telling of two refusals: any other reason
// over the purpose, the purpose over no grant at all.
func moreSpecific(reason, r string) string {
	switch {
	case r == reasonNoGrant:
		return reason
	case r == reasonPurpose && reason != reasonNoGrant:
		return reason
	}
	return r
}

// pickGrant finds the agent's oldest live grant covering ref for purpose.
// Without one it says which part was missing.
func pickGrant(mine []*Grant, ref TokenRef, purpose string, now time.Time) (*Grant, string) {
	reason := reasonNoGrant
	for _, g := range mine {
		r := grantRefusal(g, ref, purpose, now)
		if r == "" {
			return g, ""
		}
		reason = moreSpecific(reason, r)
	}
	return nil, reason
}

// countPerGrant applies each grant's approval_over: it counts the distinct
// values one request would reveal under the grant without an approval.
func (p *detokPlan) countPerGrant() {
	perGrant := map[string]int{}
	for i := range p.items {
		if it := &p.items[i]; it.grant != nil && !it.approved {
			perGrant[it.grant.ID]++
		}
	}
	for i := range p.items {
		it := &p.items[i]
		if g := it.grant; g != nil && !it.approved && it.rule == "" && g.ApprovalOver != nil && perGrant[g.ID] > *g.ApprovalOver {
			it.rule = fmt.Sprintf("grant %s allows at most %d values per request without approval", g.ID, *g.ApprovalOver)
		}
	}
}

// commitDetokenize decides the request in the single writer, against the
// stored grants and approval and the clock read there: it redeems the
// approval, drops items whose grant has ended, holds the fresh items if
// any trips a rule (opening an approval for them), spends one use of each
// grant that reveals, and writes the audit entry. It returns the approval
// opened, if any, and the grants whose use was spent.
func (s *Service) commitDetokenize(meta RequestMeta, req DetokenizeRequest, plan *detokPlan, approval *storedApproval) (*storedApproval, map[string]*Grant, error) {
	e := s.newEntry(meta, "detokenize")
	e.Purpose = req.Purpose
	var created *storedApproval
	var spent map[string]*Grant
	err := s.writer.apply(&mutation{entry: e, size: 1024 + 256*len(req.Tokens), auditOnly: true, prepare: func(txn storage.Txn) error {
		now := s.now()
		e.Time = now
		if approval != nil {
			if err := redeemApproval(txn, approval.ID, now); err != nil {
				return err
			}
			e.ApprovalID = approval.ID
		}
		stored, err := recheckGrants(txn, plan, now)
		if err != nil {
			return err
		}
		rules := plan.holdFresh()
		spent = map[string]*Grant{}
		for i := range plan.items {
			if it := &plan.items[i]; it.grant != nil && !it.held {
				spent[it.grant.ID] = stored[it.grant.ID]
			}
		}
		for _, g := range spent {
			g.Uses++
			if err := setGrant(txn, g); err != nil {
				return err
			}
		}
		if len(rules) > 0 {
			created = s.newApproval(meta, req.Purpose, plan, rules, now)
			if err := putApproval(txn, created); err != nil {
				return err
			}
		}
		fillDetokenizeEntry(e, plan)
		switch {
		case created != nil && approval != nil:
			e.Reason = "approval redeemed; approval " + created.ID + " requested for the rest: " + strings.Join(rules, "; ")
		case created != nil:
			e.ApprovalID = created.ID
			e.Reason = "approval requested: " + strings.Join(rules, "; ")
		case approval != nil && e.Reason != "":
			e.Reason = "approval redeemed; " + e.Reason
		case approval != nil:
			e.Reason = "approval redeemed"
		}
		return nil
	}})
	return created, spent, err
}

// redeemApproval marks an approval redeemed, exactly once: of two racing
// redemptions one finds it already redeemed.
func redeemApproval(txn storage.Txn, id string, now time.Time) error {
	a, err := readApproval(txn, id)
	if err != nil {
		return reject(err)
	}
	if st := a.effectiveStatus(now); st != ApprovalApproved {
		return reject(conflict("approval_not_redeemable", "approval %q is %s", a.ID, st))
	}
	a.Status, a.RedeemedAt = ApprovalRedeemed, &now
	return putApproval(txn, a)
}

// recheckGrants reads each grant the plan uses as stored, in the single
// writer, so of requests racing for a grant's last use one wins; items
// whose grant has ended since are denied. It returns the live grants.
func recheckGrants(txn storage.Txn, plan *detokPlan, now time.Time) (map[string]*Grant, error) {
	live := map[string]*Grant{}
	ended := map[string]bool{}
	for i := range plan.items {
		it := &plan.items[i]
		if it.grant == nil {
			continue
		}
		id := it.grant.ID
		if _, ok := live[id]; !ok && !ended[id] {
			g, err := readGrant(txn, id)
			var skip errSkip
			switch {
			case errors.As(err, &skip):
				ended[id] = true
			case err != nil:
				return nil, err
			case g.state(now) != GrantLive:
				ended[id] = true
			default:
				live[id] = g
			}
		}
		if ended[id] {
			it.grant, it.value, it.approved = nil, nil, false
			it.dec.Decision, it.dec.Reason, it.dec.GrantID = StatusDenied, reasonGrantGone, ""
		}
	}
	return live, nil
}

// holdFresh holds every fresh item a grant covers if any of them trips an
// approval rule, and returns the rules tripped. Approved items are never
// held: a person has decided them.
func (p *detokPlan) holdFresh() []string {
	var rules []string
	for _, it := range p.items {
		if it.grant != nil && !it.approved && it.rule != "" && !slices.Contains(rules, it.rule) {
			rules = append(rules, it.rule)
		}
	}
	if len(rules) > 0 {
		for i := range p.items {
			if it := &p.items[i]; it.grant != nil && !it.approved {
				it.held = true
			}
		}
	}
	return rules
}

// detokenizeResults answers each token of the request, in its order.
func (s *Service) detokenizeResults(tokens []string, plan *detokPlan, created *storedApproval) []DetokenizeResult {
	out := make([]DetokenizeResult, len(tokens))
	for i, j := range plan.at {
		item := &plan.items[j]
		r := DetokenizeResult{Token: tokens[i], Status: item.dec.Decision, Reason: item.dec.Reason}
		switch {
		case item.grant != nil && item.held:
			r.Status, r.ApprovalID, r.Reason = StatusPending, created.ID, item.rule
		case item.grant != nil && item.grant.Reveal == RevealMasked:
			r.Status, r.Value = StatusMasked, s.maskValue(item.ref, item.value)
		case item.grant != nil:
			r.Status, r.Value = StatusOK, item.value
		}
		out[i] = r
	}
	return out
}

// checkRedemption checks that a request presenting an approval id is the
// approved request: same agent, same purpose, same tokens in the same
// order, approved and within its redemption window. Which of the tokens
// the approval covers is decided per token, by resolveApproved.
func checkRedemption(a *storedApproval, meta RequestMeta, req DetokenizeRequest, plan *detokPlan, now time.Time) error {
	mismatch := &Error{Kind: ErrForbidden, Code: "approval_mismatch", Message: "the tokens differ from the approved request"}
	if actorID(meta.Actor) != a.RequesterID {
		return &Error{Kind: ErrForbidden, Code: "not_requester", Message: "only the agent that made the request can redeem its approval"}
	}
	if req.Purpose != a.Purpose {
		return &Error{Kind: ErrForbidden, Code: "approval_mismatch", Message: "the purpose differs from the approved request"}
	}
	if len(plan.at) != len(a.TokenHashes) {
		return mismatch
	}
	for i, j := range plan.at {
		if plan.items[j].dec.TokenHash != a.TokenHashes[i] {
			return mismatch
		}
	}
	if st := a.effectiveStatus(now); st != ApprovalApproved {
		return conflict("approval_not_redeemable", "approval %q is %s", a.ID, st)
	}
	return nil
}

// fillDetokenizeEntry records every token's decision, in request order,
// and the request's overall decision in the audit entry.
func fillDetokenizeEntry(e *AuditEntry, plan *detokPlan) {
	allowed, pending, denied := 0, 0, 0
	cols, fields, recs, grants := map[string]bool{}, map[string]bool{}, map[string]bool{}, []string{}
	e.Tokens = make([]TokenDecision, len(plan.at))
	for i, j := range plan.at {
		item := &plan.items[j]
		d := item.dec
		switch {
		case item.grant != nil && item.held:
			d.Decision, d.Reason = DecisionPending, item.rule
			pending++
		case item.grant != nil:
			d.Decision = DecisionAllowed
			if item.approved {
				d.Reason = "approved"
			}
			allowed++
			if !slices.Contains(grants, d.GrantID) {
				grants = append(grants, d.GrantID)
			}
		default:
			denied++
		}
		if d.Collection != "" {
			cols[d.Collection] = true
			fields[d.Field] = true
			recs[d.RecordID] = true
		}
		e.Tokens[i] = d
	}
	switch {
	case pending > 0 && allowed == 0:
		e.Decision = DecisionPending
	case denied == 0 && pending == 0:
		e.Decision = DecisionAllowed
	case allowed == 0:
		e.Decision = DecisionDenied
	default:
		e.Decision = DecisionPartial
	}
	e.Collection = joinKeys(cols)
	e.Fields = sortedKeys(fields)
	e.RecordIDs = sortedKeys(recs)
	if len(grants) > 0 {
		e.GrantID = grants[0]
		if len(grants) > 1 {
			e.Reason = "grants used: " + joinList(grants)
		}
	}
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func joinKeys(m map[string]bool) string { return joinList(sortedKeys(m)) }

func joinList(s []string) string {
	out := ""
	for i, v := range s {
		if i > 0 {
			out += ","
		}
		out += v
	}
	return out
}

// approvalRule names the field rule that revealing v trips, or "". The
// threshold compares the decrypted value, strictly above; both are exact
// float64 values, and a value that is not (stored before numbers were
// checked) trips the rule.
func approvalRule(f *Field, v json.RawMessage) string {
	if f.Approval == "always" {
		return fmt.Sprintf("field %s always needs approval", f.Name)
	}
	if f.ApprovalAbove != nil {
		x, exact := exactNumber(string(v))
		if !exact || x > *f.ApprovalAbove {
			return fmt.Sprintf("field %s is above %s", f.Name, strconv.FormatFloat(*f.ApprovalAbove, 'g', -1, 64))
		}
	}
	return ""
}

// maskValue masks a revealed value with its field's mask; the answer is
// always a JSON string.
func (s *Service) maskValue(ref TokenRef, v json.RawMessage) json.RawMessage {
	mask := tokenizer.MaskFull
	if c, err := s.collection(ref.Collection); err == nil {
		if fd, ok := c.Field(ref.Field); ok {
			mask = fd.Mask
		}
	}
	plain := string(v)
	var str string
	if json.Unmarshal(v, &str) == nil {
		plain = str
	}
	out, _ := json.Marshal(mask.Apply(plain))
	return out
}

// tokenHasher returns the keyed hash used for tokens in the audit log.
func (s *Service) tokenHasher() (*keys.IndexKey, error) {
	return s.vaultPRF("audit/token-hash", &s.auditPRF, s.keys.NewIndexKey)
}

// vaultPRF returns the vault-wide PRF keyset of scope, kept in slot once
// loaded, creating it with fresh (and storing it wrapped by the KEK) on
// first use.
func (s *Service) vaultPRF(scope string, slot *atomic.Pointer[keys.IndexKey], fresh func() (*keys.IndexKey, error)) (*keys.IndexKey, error) {
	if k := slot.Load(); k != nil {
		return k, nil
	}
	// Read before taking loadMu: no one waits for the store holding it
	// (see collectionIn).
	wrapped, err := s.storedKeyset(scope)
	if err != nil {
		return nil, err
	}
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	return s.vaultPRFLocked(scope, slot, fresh, wrapped)
}

// vaultPRFLocked is vaultPRF for a caller holding loadMu that has read
// the stored keyset, wrapped (nil: none is stored yet, so it is made).
func (s *Service) vaultPRFLocked(scope string, slot *atomic.Pointer[keys.IndexKey], fresh func() (*keys.IndexKey, error), wrapped []byte) (*keys.IndexKey, error) {
	if k := slot.Load(); k != nil {
		return k, nil
	}
	var k *keys.IndexKey
	var err error
	if wrapped != nil {
		if k, err = s.keys.OpenIndexKey(wrapped, scope); err != nil {
			return nil, kmsErr(err)
		}
	} else {
		if k, err = fresh(); err != nil {
			return nil, err
		}
		if wrapped, err = s.keys.WrapIndexKey(k, scope); err != nil {
			return nil, kmsErr(err)
		}
		if err := s.storeNewKeyset(scope, wrapped, nil); err != nil {
			return nil, err
		}
	}
	slot.Store(k)
	return k, nil
}
