package vault

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/agentvault/agentvault/storage"
)

// Approval statuses.
const (
	ApprovalPending  = "pending"
	ApprovalApproved = "approved"
	ApprovalDenied   = "denied"
	ApprovalExpired  = "expired"
	ApprovalRedeemed = "redeemed"
)

// Approval is a held detokenize request waiting for, or carrying, a human
// decision. It never holds a value or a raw token: the request's tokens are
// kept as keyed hashes, to check that a redemption asks for the same ones.
type Approval struct {
	ID          string `json:"id"`
	Status      string `json:"status"`
	RequesterID string `json:"requester_id"`
	// RequesterName and DecidedByName are the principals' names at the
	// time, for people reading the approval.
	RequesterName string     `json:"requester_name"`
	Purpose       string     `json:"purpose"`
	Collection    string     `json:"collection"`
	Fields        []string   `json:"fields"`
	RecordIDs     []string   `json:"record_ids"`
	RecordCount   int        `json:"record_count"`
	TokenCount    int        `json:"token_count"`
	Rules         []string   `json:"rules"`
	GrantIDs      []string   `json:"grant_ids"`
	CreatedAt     time.Time  `json:"created_at"`
	ExpiresAt     time.Time  `json:"expires_at"`
	DecidedBy     string     `json:"decided_by,omitempty"`
	DecidedByName string     `json:"decided_by_name,omitempty"`
	DecidedAt     *time.Time `json:"decided_at,omitempty"`
	Reason        string     `json:"reason,omitempty"`
	RedeemBy      *time.Time `json:"redeem_by,omitempty"`
	RedeemedAt    *time.Time `json:"redeemed_at,omitempty"`
}

type storedApproval struct {
	Approval
	// TokenHashes are the request's tokens in order, to check that a
	// redemption is the same request.
	TokenHashes []string `json:"token_hashes"`
	// Items are what the approver is shown and decides: each held token,
	// at the record and under the grant it would be revealed from. A
	// redemption reveals these and nothing else. Approvals stored before
	// items existed have none, so they reveal nothing.
	Items []approvedItem `json:"items"`
}

// approvedItem is one value an approval covers.
type approvedItem struct {
	TokenHash  string `json:"token_hash"`
	GrantID    string `json:"grant_id"`
	Collection string `json:"collection"`
	RecordID   string `json:"record_id"`
	Field      string `json:"field"`
}

// covering returns the item of a that covers the token with this hash, or
// nil (also when a is nil).
func (a *storedApproval) covering(tokenHash string) *approvedItem {
	if a == nil {
		return nil
	}
	for i := range a.Items {
		if a.Items[i].TokenHash == tokenHash {
			return &a.Items[i]
		}
	}
	return nil
}

func approvalKey(id string) []byte { return []byte("ap/" + id) }

// An open approval (pending, or approved and not yet redeemed) also has a
// due key, "ad/<deadline, big-endian Unix ns><id>", so the expiry sweeper
// reads only what has come due instead of every approval ever made.
const approvalDuePrefix = "ad/"

func approvalDueKey(deadline time.Time, id string) []byte {
	k := binary.BigEndian.AppendUint64([]byte(approvalDuePrefix), uint64(deadline.UnixNano()))
	return append(k, id...)
}

// approvalDueReady marks a database whose due keys are complete.
var approvalDueReady = []byte("meta/approval-due-v1")

// deadline is when an open approval expires; ok is false for a closed one.
func (a *Approval) deadline() (time.Time, bool) {
	switch {
	case a.Status == ApprovalPending:
		return a.ExpiresAt, true
	case a.Status == ApprovalApproved && a.RedeemBy != nil:
		return *a.RedeemBy, true
	}
	return time.Time{}, false
}

// effectiveStatus is the status the clock implies: an undecided approval
// past its window, or an approved one past its redemption window, has
// expired even before the sweeper records it.
func (a *Approval) effectiveStatus(now time.Time) string {
	switch {
	case a.Status == ApprovalPending && !now.Before(a.ExpiresAt):
		return ApprovalExpired
	case a.Status == ApprovalApproved && a.RedeemBy != nil && !now.Before(*a.RedeemBy):
		return ApprovalExpired
	}
	return a.Status
}

func readApproval(txn storage.Txn, id string) (*storedApproval, error) {
	item, err := txn.Get(approvalKey(id))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, notFound("approval_not_found", "no approval %q", id)
	}
	if err != nil {
		return nil, err
	}
	var a storedApproval
	if err := item.Value(func(v []byte) error { return json.Unmarshal(v, &a) }); err != nil {
		return nil, fmt.Errorf("decode approval %s: %w", id, err)
	}
	return &a, nil
}

// putApproval stores an approval and keeps its due key in step: the keys
// of both deadlines it may have had are dropped and the current one, if
// it is still open, is set.
func putApproval(txn storage.Txn, a *storedApproval) error {
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	if err := txn.Set(approvalKey(a.ID), b); err != nil {
		return err
	}
	if err := txn.Delete(approvalDueKey(a.ExpiresAt, a.ID)); err != nil {
		return err
	}
	if a.RedeemBy != nil {
		if err := txn.Delete(approvalDueKey(*a.RedeemBy, a.ID)); err != nil {
			return err
		}
	}
	if due, open := a.deadline(); open {
		return txn.Set(approvalDueKey(due, a.ID), nil)
	}
	return nil
}

// initApprovalDue writes the due keys of every open approval, once, for a
// database written before they existed. It runs before the writer starts.
func initApprovalDue(store storage.Store) error {
	txn := store.NewWriteTxn()
	defer txn.Discard()
	if _, err := txn.Get(approvalDueReady); err == nil {
		return nil
	} else if !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	var due [][]byte
	it := txn.NewIterator(storage.IterOptions{Prefix: []byte("ap/"), PrefetchValues: true})
	for it.Rewind(); it.Valid(); it.Next() {
		var a storedApproval
		if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &a) }); err != nil {
			it.Close()
			return fmt.Errorf("decode approval %s: %w", it.Item().Key(), err)
		}
		if d, open := a.deadline(); open {
			due = append(due, approvalDueKey(d, a.ID))
		}
	}
	it.Close()
	for _, k := range due {
		if err := txn.Set(k, nil); err != nil {
			return err
		}
	}
	if err := txn.Set(approvalDueReady, []byte{1}); err != nil {
		return err
	}
	return txn.Commit()
}

// eachDue calls fn with the deadline (Unix ns) and id of every open
// approval, earliest deadline first, until fn returns false.
func eachDue(txn storage.Txn, fn func(deadline int64, id string) (more bool, err error)) error {
	it := txn.NewIterator(storage.IterOptions{Prefix: []byte(approvalDuePrefix)})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		k := it.Item().Key()[len(approvalDuePrefix):]
		if len(k) < 8 {
			return fmt.Errorf("approval due key %q: too short", it.Item().Key())
		}
		if more, err := fn(int64(binary.BigEndian.Uint64(k)), string(k[8:])); err != nil || !more {
			return err
		}
	}
	return nil
}

// dueApprovals returns the ids of open approvals whose deadline is not
// after now, reading only the due keys up to now.
func (s *Service) dueApprovals(now time.Time) ([]string, error) {
	var ids []string
	err := s.store.View(func(txn storage.Txn) error {
		return eachDue(txn, func(deadline int64, id string) (bool, error) {
			if deadline > now.UnixNano() {
				return false, nil
			}
			ids = append(ids, id)
			return true, nil
		})
	})
	return ids, err
}

// GetApproval returns an approval. Approvers see any; an agent sees only
// its own.
func (s *Service) GetApproval(ctx context.Context, actor *Principal, id string) (*Approval, error) {
	var a *storedApproval
	err := s.store.View(func(txn storage.Txn) (err error) { a, err = readApproval(txn, id); return err })
	if err != nil {
		return nil, err
	}
	if !canSeeApproval(actor, &a.Approval) {
		return nil, notFound("approval_not_found", "no approval %q", id)
	}
	out := a.Approval
	out.Status = out.effectiveStatus(s.now())
	return &out, nil
}

// eachApproval calls fn with every stored approval, or with only the open
// ones (pending, or approved and not yet redeemed, found through their due
// keys), so the console's pending list does not grow with history.
func (s *Service) eachApproval(openOnly bool, fn func(a *Approval)) error {
	return s.store.View(func(txn storage.Txn) error {
		if openOnly {
			return eachDue(txn, func(_ int64, id string) (bool, error) {
				a, err := readApproval(txn, id)
				if err != nil {
					return false, err
				}
				fn(&a.Approval)
				return true, nil
			})
		}
		it := txn.NewIterator(storage.IterOptions{Prefix: []byte("ap/"), PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var a storedApproval
			if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &a) }); err != nil {
				return err
			}
			fn(&a.Approval)
		}
		return nil
	})
}

func canSeeApproval(p *Principal, a *Approval) bool {
	return p != nil && (p.Has(RoleApprover) || p.Has(RoleAdmin) || p.ID == a.RequesterID)
}

// ListApprovals returns approvals, newest first, filtered by status; an
// agent that is not an approver sees only its own.
func (s *Service) ListApprovals(ctx context.Context, actor *Principal, status string) ([]Approval, error) {
	switch status {
	case "", ApprovalPending, ApprovalApproved, ApprovalDenied, ApprovalExpired, ApprovalRedeemed:
	default:
		return nil, invalid("invalid_status", "status must be pending, approved, denied, expired or redeemed")
	}
	now := s.now()
	out := []Approval{}
	// A pending or approved approval is open, so its due key finds it.
	open := status == ApprovalPending || status == ApprovalApproved
	err := s.eachApproval(open, func(a *Approval) {
		a.Status = a.effectiveStatus(now)
		if canSeeApproval(actor, a) && (status == "" || a.Status == status) {
			out = append(out, *a)
		}
	})
	slices.SortFunc(out, func(a, b Approval) int { return b.CreatedAt.Compare(a.CreatedAt) })
	return out, err
}

// DecideApproval approves or denies a pending approval. The approver must
// not be the requester (four-eyes) and must give a reason. An approved
// request can be redeemed once, by the requester, within the redemption
// window.
func (s *Service) DecideApproval(ctx context.Context, meta RequestMeta, id string, approve bool, reason string) (*Approval, error) {
	if err := checkReason(reason); err != nil {
		return nil, err
	}
	action, status := "approval.deny", ApprovalDenied
	if approve {
		action, status = "approval.approve", ApprovalApproved
	}
	e := s.newEntry(meta, action)
	e.ApprovalID, e.Reason = id, reason
	var out Approval
	err := s.writer.apply(&mutation{entry: e, size: 4096, prepare: func(txn storage.Txn) error {
		now := s.now()
		e.Time = now
		a, err := readApproval(txn, id)
		if err != nil {
			return reject(err)
		}
		if meta.Actor != nil && meta.Actor.ID == a.RequesterID {
			return reject(&Error{Kind: ErrForbidden, Code: "four_eyes", Message: "the requester of an approval cannot decide it"})
		}
		if st := a.effectiveStatus(now); st != ApprovalPending {
			return reject(conflict("approval_not_pending", "approval %q is %s, not pending", id, st))
		}
		a.Status, a.DecidedBy, a.DecidedAt, a.Reason = status, actorID(meta.Actor), &now, reason
		if meta.Actor != nil {
			a.DecidedByName = meta.Actor.Name
		}
		if approve {
			by := now.Add(s.cfg.RedeemWindow)
			a.RedeemBy = &by
		}
		e.Collection, e.Fields, e.RecordIDs, e.Purpose, e.Target = a.Collection, a.Fields, a.RecordIDs, a.Purpose, a.RequesterID
		out = a.Approval
		return putApproval(txn, a)
	}})
	if err != nil {
		return nil, err
	}
	if s.cfg.OnApproval != nil {
		s.cfg.OnApproval("approval."+status, out)
	}
	return &out, nil
}

// ExpireApprovals records the expiry of every approval whose decision or
// redemption window has passed, each with an audit entry.
func (s *Service) ExpireApprovals(ctx context.Context) (int, error) {
	now := s.now()
	due, err := s.dueApprovals(now)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, id := range due {
		e := s.newEntry(RequestMeta{}, "approval.expire")
		e.ApprovalID = id
		var expired Approval
		err := s.writer.apply(&mutation{entry: e, size: 4096, prepare: func(txn storage.Txn) error {
			now := s.now()
			a, err := readApproval(txn, id)
			if err != nil {
				return reject(err)
			}
			if a.Status == ApprovalExpired || a.effectiveStatus(now) != ApprovalExpired {
				return reject(conflict("approval_changed", "approval %q changed", id))
			}
			e.Reason = "was " + a.Status
			e.Target, e.Purpose = a.RequesterID, a.Purpose
			a.Status = ApprovalExpired
			expired = a.Approval
			return putApproval(txn, a)
		}})
		if err == nil {
			n++
			if s.cfg.OnApproval != nil {
				s.cfg.OnApproval("approval.expired", expired)
			}
		} else if !errors.Is(err, ErrConflict) {
			return n, err
		}
	}
	return n, nil
}

// newApproval builds the approval a held request opens: it covers the
// held items, each at its place and under its grant.
func (s *Service) newApproval(meta RequestMeta, purpose string, plan *detokPlan, rules []string, now time.Time) *storedApproval {
	a := &storedApproval{Approval: Approval{
		ID: uuid.NewString(), Status: ApprovalPending, RequesterID: actorID(meta.Actor), Purpose: purpose,
		Rules: rules, CreatedAt: now, ExpiresAt: now.Add(s.cfg.ApprovalWindow),
	}}
	if meta.Actor != nil {
		a.RequesterName = meta.Actor.Name
	}
	for _, j := range plan.at {
		a.TokenHashes = append(a.TokenHashes, plan.items[j].dec.TokenHash)
	}
	cols, fields, recs, grants := map[string]bool{}, map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, it := range plan.items {
		if it.grant == nil || !it.held {
			continue
		}
		a.Items = append(a.Items, approvedItem{TokenHash: it.dec.TokenHash, GrantID: it.grant.ID,
			Collection: it.ref.Collection, RecordID: it.ref.RecordID, Field: it.ref.Field})
		cols[it.ref.Collection], fields[it.ref.Field], recs[it.ref.RecordID], grants[it.grant.ID] = true, true, true, true
	}
	a.TokenCount = len(a.Items)
	a.Collection, a.Fields, a.RecordIDs, a.GrantIDs = joinKeys(cols), sortedKeys(fields), sortedKeys(recs), sortedKeys(grants)
	a.RecordCount = len(a.RecordIDs)
	return a
}
