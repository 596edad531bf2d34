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
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/agentvault/agentvault/keys"
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
)

type detokItem struct {
	ref   TokenRef
	grant *Grant
	value json.RawMessage
	rule  string // the approval rule this reveal trips, if any
	dec   TokenDecision
}

// Detokenize reveals what the agent's live grants allow, and nothing else.
//
// If revealing any value would trip an approval rule (a field that always
// needs approval, a number above its field's approval_above, more values
// than a grant's approval_over), the whole request is held: every token
// that could be revealed answers pending_approval with one approval id,
// and no grant use is spent. Once a different person approves, the agent
// sends the same tokens and purpose again with approval_id, once, within
// the redemption window; grants are checked again then.
//
// The decision for every token is written to the audit log, with the
// grants' use counts and the approval's state, in one durable transaction
// before anything is returned: if that write fails, the request fails and
// reveals nothing.
func (s *Service) Detokenize(ctx context.Context, meta RequestMeta, req DetokenizeRequest) ([]DetokenizeResult, error) {
	switch {
	case len(req.Tokens) == 0:
		return nil, invalid("empty_tokens", "tokens must hold at least one token")
	case len(req.Tokens) > MaxDetokenizeTokens:
		return nil, &Error{Kind: ErrTooLarge, Code: "too_many_tokens", Message: "a request holds at most " + strconv.Itoa(MaxDetokenizeTokens) + " tokens"}
	case req.Purpose == "" || len(req.Purpose) > MaxPurposeLen:
		return nil, invalid("invalid_purpose", "purpose is required, at most %d characters", MaxPurposeLen)
	}
	hasher, err := s.tokenHasher()
	if err != nil {
		return nil, err
	}
	now := s.now()
	agentID := actorID(meta.Actor)
	s.gmu.RLock()
	mine := make([]*Grant, len(s.byAgent[agentID]))
	for i, g := range s.byAgent[agentID] {
		cp := *g
		mine[i] = &cp
	}
	s.gmu.RUnlock()

	items := make([]detokItem, len(req.Tokens))
	var approval *storedApproval
	err = s.store.View(func(txn *badger.Txn) error {
		if req.ApprovalID != "" {
			var err error
			if approval, err = readApproval(txn, req.ApprovalID); err != nil {
				return err
			}
		}
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: false})
		defer it.Close()
		for i, tok := range req.Tokens {
			item := &items[i]
			h, err := hasher.Compute([]byte(tok), 16)
			if err != nil {
				return err
			}
			item.dec.TokenHash = hex.EncodeToString(h)
			var refs []TokenRef
			if _, err := tokenizer.ParseToken(tok); err == nil {
				if refs, err = resolveToken(txn, it, tok); err != nil {
					return err
				}
			}
			if len(refs) == 0 {
				item.dec.Decision = StatusNotFound
				continue
			}
			ref, g, reason := pickGrant(mine, refs, req.Purpose, now)
			item.ref = ref
			item.dec.Collection, item.dec.Field, item.dec.RecordID = ref.Collection, ref.Field, ref.RecordID
			if g == nil {
				item.dec.Decision, item.dec.Reason = StatusDenied, reason
				continue
			}
			v, err := s.decryptField(ref)
			if errors.Is(err, keys.ErrDecrypt) {
				s.log.Error("stored ciphertext failed its integrity check", "collection", ref.Collection, "record_id", ref.RecordID, "field", ref.Field)
				item.dec.Decision, item.dec.Reason = StatusDenied, "the stored value failed its integrity check"
				continue
			}
			if err != nil {
				return err
			}
			c, err := s.collection(ref.Collection)
			if err != nil {
				return err
			}
			if fd, ok := c.Field(ref.Field); ok {
				item.rule = approvalRule(fd, v)
			}
			item.grant, item.value = g, v
			item.dec.GrantID = g.ID
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// A grant's approval_over counts the values one request would reveal
	// under it.
	perGrant := map[string]int{}
	for i := range items {
		if items[i].grant != nil {
			perGrant[items[i].grant.ID]++
		}
	}
	for i := range items {
		if g := items[i].grant; g != nil && items[i].rule == "" && g.ApprovalOver != nil && perGrant[g.ID] > *g.ApprovalOver {
			items[i].rule = fmt.Sprintf("grant %s allows at most %d values per request without approval", g.ID, *g.ApprovalOver)
		}
	}
	if approval != nil {
		if err := checkRedemption(approval, meta, req, items, now); err != nil {
			return nil, err
		}
	}
	var rules []string
	if approval == nil {
		for _, it := range items {
			if it.grant != nil && it.rule != "" && !slices.Contains(rules, it.rule) {
				rules = append(rules, it.rule)
			}
		}
	}
	hold := len(rules) > 0

	e := s.newEntry(meta, "detokenize")
	e.Purpose = req.Purpose
	updated := map[string]*Grant{}
	var created *storedApproval
	err = s.writer.apply(&mutation{entry: e, size: 1024 + 256*len(items), prepare: func(txn *badger.Txn) error {
		if approval != nil {
			// Redeem exactly once: of two racing redemptions one finds it
			// already redeemed.
			a, err := readApproval(txn, approval.ID)
			if err != nil {
				return reject(err)
			}
			if st := a.effectiveStatus(now); st != ApprovalApproved {
				return reject(conflict("approval_not_redeemable", "approval %q is %s", a.ID, st))
			}
			a.Status, a.RedeemedAt = ApprovalRedeemed, &now
			if err := putApproval(txn, a); err != nil {
				return err
			}
			e.ApprovalID = a.ID
		}
		// Decide each grant against its stored state, in the single
		// writer: of requests racing for a grant's last use, one wins.
		for i := range items {
			g := items[i].grant
			if g == nil {
				continue
			}
			stored, seen := updated[g.ID]
			if !seen {
				var err error
				stored, err = readGrant(txn, g.ID)
				if err != nil {
					var skip errSkip
					if !errors.As(err, &skip) {
						return err
					}
					stored = &Grant{ID: g.ID, RevokedAt: &now}
				}
				if stored.state(now) == GrantLive {
					if !hold {
						stored.Uses++ // a held request reveals nothing and spends nothing
					}
					updated[g.ID] = stored
				} else {
					updated[g.ID], stored = nil, nil
				}
			}
			if stored == nil {
				items[i].grant, items[i].value = nil, nil
				items[i].dec.Decision, items[i].dec.Reason = StatusDenied, reasonGrantGone
			}
		}
		if hold {
			var held []detokItem
			for _, it := range items {
				if it.grant != nil {
					held = append(held, it)
				}
			}
			if len(held) > 0 {
				created = s.newApproval(meta, req.Purpose, items, rules, now)
				if err := putApproval(txn, created); err != nil {
					return err
				}
				e.ApprovalID = created.ID
			}
		} else {
			for _, g := range updated {
				if g == nil {
					continue
				}
				b, err := json.Marshal(g)
				if err != nil {
					return err
				}
				if err := txn.Set(grantKey(g.ID), b); err != nil {
					return err
				}
			}
		}
		fillDetokenizeEntry(e, items, created != nil)
		switch {
		case created != nil:
			e.Reason = "approval requested: " + strings.Join(rules, "; ")
		case approval != nil && e.Reason != "":
			e.Reason = "approval redeemed; " + e.Reason
		case approval != nil:
			e.Reason = "approval redeemed"
		}
		return nil
	}})
	if err != nil {
		return nil, err
	}
	if created != nil && s.cfg.OnApproval != nil {
		s.cfg.OnApproval("approval.requested", created.Approval)
	}
	if !hold {
		s.gmu.Lock()
		for id, g := range updated {
			if cur, ok := s.grants[id]; ok && g != nil && g.Uses > cur.Uses {
				cur.Uses = g.Uses
			}
		}
		s.gmu.Unlock()
	}

	out := make([]DetokenizeResult, len(items))
	for i, item := range items {
		r := DetokenizeResult{Token: req.Tokens[i], Status: item.dec.Decision, Reason: item.dec.Reason}
		switch {
		case item.grant != nil && created != nil:
			r.Status, r.ApprovalID, r.Reason = StatusPending, created.ID, item.rule
		case item.grant != nil && item.grant.Reveal == RevealMasked:
			r.Status, r.Value = StatusMasked, s.maskValue(item.ref, item.value)
		case item.grant != nil:
			r.Status, r.Value = StatusOK, item.value
		}
		out[i] = r
	}
	return out, nil
}

// checkRedemption checks that a request presenting an approval id is the
// approved request: same agent, same purpose, same tokens, approved and
// within its redemption window.
func checkRedemption(a *storedApproval, meta RequestMeta, req DetokenizeRequest, items []detokItem, now time.Time) error {
	if actorID(meta.Actor) != a.RequesterID {
		return &Error{Kind: ErrForbidden, Code: "not_requester", Message: "only the agent that made the request can redeem its approval"}
	}
	if req.Purpose != a.Purpose {
		return &Error{Kind: ErrForbidden, Code: "approval_mismatch", Message: "the purpose differs from the approved request"}
	}
	if len(items) != len(a.TokenHashes) {
		return &Error{Kind: ErrForbidden, Code: "approval_mismatch", Message: "the tokens differ from the approved request"}
	}
	for i := range items {
		if items[i].dec.TokenHash != a.TokenHashes[i] {
			return &Error{Kind: ErrForbidden, Code: "approval_mismatch", Message: "the tokens differ from the approved request"}
		}
	}
	if st := a.effectiveStatus(now); st != ApprovalApproved {
		return conflict("approval_not_redeemable", "approval %q is %s", a.ID, st)
	}
	return nil
}

// fillDetokenizeEntry records every token's decision and the request's
// overall decision in the audit entry.
func fillDetokenizeEntry(e *AuditEntry, items []detokItem, held bool) {
	allowed, denied := 0, 0
	cols, fields, recs, grants := map[string]bool{}, map[string]bool{}, map[string]bool{}, []string{}
	e.Tokens = make([]TokenDecision, len(items))
	for i := range items {
		d := items[i].dec
		if items[i].grant != nil && held {
			d.Decision, d.Reason = DecisionPending, items[i].rule
			allowed++
		} else if items[i].grant != nil {
			d.Decision = DecisionAllowed
			allowed++
			if !slices.Contains(grants, d.GrantID) {
				grants = append(grants, d.GrantID)
			}
		} else {
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
	case held:
		e.Decision = DecisionPending
	case denied == 0:
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

// pickGrant finds, for any of the token's records, the oldest live grant
// covering collection, field, record and purpose. Without one it says
// which part was missing.
func pickGrant(mine []*Grant, refs []TokenRef, purpose string, now time.Time) (TokenRef, *Grant, string) {
	reason := reasonNoGrant
	for _, ref := range refs {
		for _, g := range mine {
			if g.Collection != ref.Collection || !slices.Contains(g.Fields, ref.Field) {
				continue
			}
			if g.Purpose != purpose {
				if reason == reasonNoGrant {
					reason = reasonPurpose
				}
				continue
			}
			if len(g.RecordIDs) > 0 && !slices.Contains(g.RecordIDs, ref.RecordID) {
				reason = reasonRecord
				continue
			}
			if st := g.state(now); st != GrantLive {
				reason = "the grant for this field is " + st
				continue
			}
			return ref, g, ""
		}
	}
	return refs[0], nil, reason
}

// approvalRule names the field rule that revealing v trips, or "". The
// threshold compares the decrypted value, strictly above.
func approvalRule(f *Field, v json.RawMessage) string {
	if f.Approval == "always" {
		return fmt.Sprintf("field %s always needs approval", f.Name)
	}
	if f.ApprovalAbove != nil {
		x, err := strconv.ParseFloat(string(v), 64)
		if err != nil || x > *f.ApprovalAbove {
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

// tokenHasher returns the keyed hash used for tokens in the audit log,
// creating its keyset (wrapped by the KEK) on first use.
func (s *Service) tokenHasher() (*keys.IndexKey, error) {
	if k := s.auditPRF.Load(); k != nil {
		return k, nil
	}
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	if k := s.auditPRF.Load(); k != nil {
		return k, nil
	}
	const scope = "audit/token-hash"
	wrapped, err := s.storedKeyset(scope)
	if err != nil {
		return nil, err
	}
	var k *keys.IndexKey
	if wrapped != nil {
		if k, err = s.keys.OpenIndexKey(wrapped, scope); err != nil {
			return nil, kmsErr(err)
		}
	} else {
		if k, err = s.keys.NewIndexKey(); err != nil {
			return nil, err
		}
		if wrapped, err = s.keys.WrapIndexKey(k, scope); err != nil {
			return nil, kmsErr(err)
		}
		if err := s.storeNewKeyset(scope, wrapped, nil); err != nil {
			return nil, err
		}
	}
	s.auditPRF.Store(k)
	return k, nil
}
