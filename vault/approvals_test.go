package vault

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentvault/agentvault/storage"
)

// approvalScene adds an approver, and a principal that is both agent and
// approver (to prove four-eyes holds even then), to the hr scene.
type approvalScene struct {
	*scene
	approver, both *Principal
}

func newApprovalScene(t *testing.T) *approvalScene {
	sc := newScene(t)
	mk := func(name string, roles ...Role) *Principal {
		p, _, err := sc.svc.CreatePrincipal(context.Background(), RequestMeta{}, name, roles)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	return &approvalScene{scene: sc, approver: mk("carol", RoleApprover), both: mk("dual", RoleAgent, RoleApprover)}
}

func (sc *approvalScene) record(kv ...any) Record {
	sc.t.Helper()
	recs, err := sc.svc.CreateRecords(context.Background(), RequestMeta{Actor: sc.writer}, "hr", []map[string]json.RawMessage{fields(kv...)})
	if err != nil {
		sc.t.Fatal(err)
	}
	return recs[0]
}

func (sc *approvalScene) decide(as *Principal, id string, approve bool, reason string) (*Approval, error) {
	return sc.svc.DecideApproval(context.Background(), RequestMeta{Actor: as}, id, approve, reason)
}

func (sc *approvalScene) redeem(as *Principal, id, purpose string, toks ...string) ([]DetokenizeResult, error) {
	return sc.svc.Detokenize(context.Background(), RequestMeta{Actor: as}, DetokenizeRequest{Tokens: toks, Purpose: purpose, ApprovalID: id})
}

// holdSSN grants the requester (the scene's agent unless the request
// names another) its record A ssn, asks for it, and returns the token and
// the approval id the held request got. approve decides it yes first.
func (sc *approvalScene) holdSSN(req GrantRequest, approve bool) (ssn, id string, g *Grant) {
	sc.t.Helper()
	as := sc.agent
	if req.PrincipalID == sc.both.ID {
		as = sc.both
	}
	req.Fields, req.Reveal = []string{"ssn"}, RevealPlain
	ssn = tokenOf(sc.t, sc.recA, "ssn")
	g = sc.grant(req)
	id = held(sc.t, sc.detok(as, "payroll", ssn))
	if approve {
		if _, err := sc.decide(sc.approver, id, true, "ok"); err != nil {
			sc.t.Fatal(err)
		}
	}
	return ssn, id, g
}

// held asserts every result is pending under one approval id and carries
// no value, and returns that id.
func held(t *testing.T, res []DetokenizeResult) string {
	t.Helper()
	id := ""
	for _, r := range res {
		if r.Status != StatusPending || r.Value != nil || r.ApprovalID == "" {
			t.Fatalf("want pending_approval without a value: %+v", res)
		}
		if id != "" && r.ApprovalID != id {
			t.Fatalf("one request, two approval ids: %+v", res)
		}
		id = r.ApprovalID
	}
	return id
}

func wantErr(t *testing.T, err error, kind error, code string) {
	t.Helper()
	var de *Error
	if !errors.Is(err, kind) || !errors.As(err, &de) || de.Code != code {
		t.Fatalf("err = %v, want %v %s", err, kind, code)
	}
}

// TestApprovalThresholds checks each rule at its boundary: approval_above
// trips strictly above N, approval_over trips at more than N values.
func TestApprovalThresholds(t *testing.T) {
	t.Parallel()
	sc := newApprovalScene(t)
	atN := sc.record("bonus", 1000, "name", "n1")
	aboveN := sc.record("bonus", 1000.5, "name", "n2")
	wayAbove := sc.record("bonus", 1001, "name", "n3")
	sc.grant(GrantRequest{Fields: []string{"bonus", "ssn"}, Reveal: RevealPlain})
	sc.grant(GrantRequest{Fields: []string{"name"}, Reveal: RevealPlain, Purpose: "bulk", ApprovalOver: ptr(2)})

	names := []string{tokenOf(t, atN, "name"), tokenOf(t, aboveN, "name"), tokenOf(t, wayAbove, "name")}
	tests := []struct {
		name    string
		purpose string
		tokens  []string
		pending bool
		rule    string
	}{
		{"approval_above: value = N reveals", "payroll", []string{tokenOf(t, atN, "bonus")}, false, ""},
		{"approval_above: N+0.5 holds", "payroll", []string{tokenOf(t, aboveN, "bonus")}, true, "field bonus is above 1000"},
		{"approval_above: N+1 holds", "payroll", []string{tokenOf(t, wayAbove, "bonus")}, true, "field bonus is above 1000"},
		{"approval always holds", "payroll", []string{tokenOf(t, sc.recA, "ssn")}, true, "field ssn always needs approval"},
		{"approval_over: N values reveal", "bulk", names[:2], false, ""},
		{"approval_over: N+1 values hold", "bulk", names, true, "at most 2 values per request"},
		{"a tripped token holds the whole request", "payroll", []string{tokenOf(t, atN, "bonus"), tokenOf(t, wayAbove, "bonus")}, true, "field bonus is above 1000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := sc.detok(sc.agent, tt.purpose, tt.tokens...)
			if !tt.pending {
				for _, r := range res {
					if r.Status != StatusOK || r.Value == nil {
						t.Fatalf("want ok: %+v", res)
					}
				}
				return
			}
			id := held(t, res)
			a, err := sc.svc.GetApproval(context.Background(), sc.approver, id)
			if err != nil {
				t.Fatal(err)
			}
			if a.Status != ApprovalPending || a.RequesterID != sc.agent.ID || a.Purpose != tt.purpose || a.TokenCount != len(tt.tokens) || !strings.Contains(strings.Join(a.Rules, ";"), tt.rule) {
				t.Fatalf("approval: %+v", a)
			}
		})
	}
	// Held requests spent no use: the grants were checked, nothing revealed.
	raw, _ := json.Marshal(mustList(t, sc))
	for _, secret := range []string{"1001", "1000.5", "123-45-6789", "n1", "n2", "n3"} {
		if strings.Contains(string(raw), secret) {
			t.Errorf("approvals list shows %q", secret)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func mustList(t *testing.T, sc *approvalScene) []Approval {
	t.Helper()
	as, err := sc.svc.ListApprovals(context.Background(), sc.approver, "")
	if err != nil {
		t.Fatal(err)
	}
	return as
}

// TestApprovalLifecycle walks one approval from request to redemption and
// checks every refusal on the way.
func TestApprovalLifecycle(t *testing.T) {
	t.Parallel()
	sc := newApprovalScene(t)
	ctx := context.Background()
	bonusB, nameA := tokenOf(t, sc.recB, "bonus"), tokenOf(t, sc.recA, "name")
	sc.grant(GrantRequest{Fields: []string{"bonus", "name"}, Reveal: RevealPlain, MaxUses: 2})
	sc.grant(GrantRequest{PrincipalID: sc.other.ID, Fields: []string{"bonus", "name"}, Reveal: RevealPlain})

	id := held(t, sc.detok(sc.agent, "payroll", bonusB, nameA))
	if gs, _ := sc.svc.ListGrants(ctx, GrantFilter{PrincipalID: sc.agent.ID}); gs[0].Uses != 0 {
		t.Fatalf("a held request spent a use: %d", gs[0].Uses)
	}
	// Redeeming before a decision is refused.
	_, err := sc.redeem(sc.agent, id, "payroll", bonusB, nameA)
	wantErr(t, err, ErrConflict, "approval_not_redeemable")

	// Who may see it.
	if _, err := sc.svc.GetApproval(ctx, sc.other, id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("another agent sees the approval: %v", err)
	}
	if a, err := sc.svc.GetApproval(ctx, sc.agent, id); err != nil || a.ID != id {
		t.Fatalf("the requester cannot see its approval: %v", err)
	}
	if l, _ := sc.svc.ListApprovals(ctx, sc.other, ""); len(l) != 0 {
		t.Fatalf("another agent lists %d approvals", len(l))
	}

	// Deciding.
	_, err = sc.decide(sc.approver, id, true, "")
	wantErr(t, err, ErrInvalid, "invalid_reason")
	_, err = sc.decide(sc.agent, id, true, "I approve of myself")
	wantErr(t, err, ErrForbidden, "four_eyes")
	a, err := sc.decide(sc.approver, id, true, "year-end bonus run, ticket HR-7")
	if err != nil || a.Status != ApprovalApproved || a.DecidedBy != sc.approver.ID || a.RedeemBy == nil {
		t.Fatalf("approve: %+v, %v", a, err)
	}
	_, err = sc.decide(sc.approver, id, false, "changed my mind")
	wantErr(t, err, ErrConflict, "approval_not_pending")

	// Redemption: only the requester, only the same tokens and purpose.
	refusals := []struct {
		name    string
		as      *Principal
		purpose string
		tokens  []string
		kind    error
		code    string
	}{
		{"another agent", sc.other, "payroll", []string{bonusB, nameA}, ErrForbidden, "not_requester"},
		{"another purpose", sc.agent, "audit", []string{bonusB, nameA}, ErrForbidden, "approval_mismatch"},
		{"fewer tokens", sc.agent, "payroll", []string{bonusB}, ErrForbidden, "approval_mismatch"},
		{"other tokens", sc.agent, "payroll", []string{nameA, bonusB}, ErrForbidden, "approval_mismatch"},
		{"unknown approval", sc.agent, "payroll", []string{bonusB, nameA}, ErrNotFound, "approval_not_found"},
	}
	for _, r := range refusals {
		aid := id
		if r.code == "approval_not_found" {
			aid = "00000000-0000-0000-0000-000000000000"
		}
		res, err := sc.redeem(r.as, aid, r.purpose, r.tokens...)
		if res != nil {
			t.Fatalf("%s: got results %+v", r.name, res)
		}
		wantErr(t, err, r.kind, r.code)
	}

	res, err := sc.redeem(sc.agent, id, "payroll", bonusB, nameA)
	if err != nil || res[0].Status != StatusOK || string(res[0].Value) != "5000" || string(res[1].Value) != `"Ann"` {
		t.Fatalf("redeem: %+v, %v", res, err)
	}
	_, err = sc.redeem(sc.agent, id, "payroll", bonusB, nameA)
	wantErr(t, err, ErrConflict, "approval_not_redeemable")
	if a, _ := sc.svc.GetApproval(ctx, sc.approver, id); a.Status != ApprovalRedeemed || a.RedeemedAt == nil {
		t.Fatalf("after redemption: %+v", a)
	}
	if gs, _ := sc.svc.ListGrants(ctx, GrantFilter{PrincipalID: sc.agent.ID}); gs[0].Uses != 1 {
		t.Fatalf("redemption spent %d uses, want 1", gs[0].Uses)
	}

	// The log tells the whole story, with actors and reasons.
	es, _, _ := sc.svc.ListAudit(ctx, AuditFilter{Limit: 1000})
	var story []string
	for _, e := range es {
		if e.ApprovalID != id {
			continue
		}
		story = append(story, e.Action+"/"+e.Decision+"/"+e.Actor)
		switch e.Action {
		case "approval.approve":
			if e.Reason != "year-end bonus run, ticket HR-7" || e.Target != sc.agent.ID {
				t.Errorf("approve entry: %+v", e)
			}
		case "detokenize":
			if !strings.HasPrefix(e.Reason, "approval ") {
				t.Errorf("detokenize entry without the approval transition: %+v", e)
			}
		}
	}
	want := []string{
		"detokenize/" + DecisionPending + "/" + sc.agent.ID,
		"approval.approve/" + DecisionOK + "/" + sc.approver.ID,
		"detokenize/" + DecisionAllowed + "/" + sc.agent.ID,
	}
	if strings.Join(story, " ") != strings.Join(want, " ") {
		t.Fatalf("audit story:\n got %v\nwant %v", story, want)
	}
	if v, _ := sc.svc.VerifyAudit(ctx); !v.OK {
		t.Fatalf("chain: %+v", v)
	}
}

// TestApprovalRefusals covers the ways an approval ends without a reveal.
func TestApprovalRefusals(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("approver who is also the requester", func(t *testing.T) {
		t.Parallel()
		sc := newApprovalScene(t)
		_, id, _ := sc.holdSSN(GrantRequest{PrincipalID: sc.both.ID}, false)
		_, err := sc.decide(sc.both, id, true, "looks fine to me")
		wantErr(t, err, ErrForbidden, "four_eyes")
		if a, _ := sc.svc.GetApproval(ctx, sc.approver, id); a.Status != ApprovalPending {
			t.Fatalf("refused decision changed the approval: %+v", a)
		}
	})

	t.Run("denied reveals nothing", func(t *testing.T) {
		t.Parallel()
		sc := newApprovalScene(t)
		ssn, id, _ := sc.holdSSN(GrantRequest{}, false)
		if a, err := sc.decide(sc.approver, id, false, "no ticket"); err != nil || a.Status != ApprovalDenied {
			t.Fatalf("deny: %+v %v", a, err)
		}
		res, err := sc.redeem(sc.agent, id, "payroll", ssn)
		if res != nil {
			t.Fatalf("denied approval revealed %+v", res)
		}
		wantErr(t, err, ErrConflict, "approval_not_redeemable")
		// Asking again opens a new approval; it does not reuse the denied one.
		if id2 := held(t, sc.detok(sc.agent, "payroll", ssn)); id2 == id {
			t.Fatal("a new request reused the denied approval")
		}
		es, _, _ := sc.svc.ListAudit(ctx, AuditFilter{Action: "approval.deny"})
		if len(es) != 1 || es[0].Reason != "no ticket" || es[0].Actor != sc.approver.ID {
			t.Fatalf("deny entries: %+v", es)
		}
	})

	t.Run("undecided approval expires", func(t *testing.T) {
		t.Parallel()
		sc := newApprovalScene(t)
		_, id, _ := sc.holdSSN(GrantRequest{TTL: "72h"}, false)
		sc.clock.advance(24*time.Hour - time.Second)
		if a, _ := sc.svc.GetApproval(ctx, sc.approver, id); a.Status != ApprovalPending {
			t.Fatalf("expired early: %+v", a)
		}
		sc.clock.advance(time.Second)
		_, err := sc.decide(sc.approver, id, true, "late")
		wantErr(t, err, ErrConflict, "approval_not_pending")
		if l, _ := sc.svc.ListApprovals(ctx, sc.approver, ApprovalPending); len(l) != 0 {
			t.Fatalf("expired approval listed as pending: %+v", l)
		}
		if n, err := sc.svc.ExpireApprovals(ctx); n != 1 || err != nil {
			t.Fatalf("sweeper expired %d, %v", n, err)
		}
		if n, _ := sc.svc.ExpireApprovals(ctx); n != 0 {
			t.Fatalf("sweeper expired %d twice", n)
		}
		es, _, _ := sc.svc.ListAudit(ctx, AuditFilter{Action: "approval.expire"})
		if len(es) != 1 || es[0].ApprovalID != id || es[0].Reason != "was pending" {
			t.Fatalf("expire entries: %+v", es)
		}
	})

	t.Run("approved but not redeemed in time", func(t *testing.T) {
		t.Parallel()
		sc := newApprovalScene(t)
		ssn, id, _ := sc.holdSSN(GrantRequest{}, true)
		sc.clock.advance(15 * time.Minute)
		res, err := sc.redeem(sc.agent, id, "payroll", ssn)
		if res != nil {
			t.Fatalf("late redemption revealed %+v", res)
		}
		wantErr(t, err, ErrConflict, "approval_not_redeemable")
		if a, _ := sc.svc.GetApproval(ctx, sc.agent, id); a.Status != ApprovalExpired {
			t.Fatalf("status after the redemption window: %s", a.Status)
		}
	})

	t.Run("grant revoked between approval and redemption", func(t *testing.T) {
		t.Parallel()
		sc := newApprovalScene(t)
		ssn, id, g := sc.holdSSN(GrantRequest{}, true)
		if err := sc.svc.RevokeGrant(ctx, RequestMeta{}, g.ID); err != nil {
			t.Fatal(err)
		}
		res, err := sc.redeem(sc.agent, id, "payroll", ssn)
		if err != nil || len(res) != 1 || res[0].Status != StatusDenied || res[0].Value != nil {
			t.Fatalf("redeem under a revoked grant: %+v, %v", res, err)
		}
	})

	t.Run("grant expired between approval and redemption", func(t *testing.T) {
		t.Parallel()
		sc := newApprovalScene(t)
		ssn, id, _ := sc.holdSSN(GrantRequest{TTL: "10m"}, true)
		sc.clock.advance(10 * time.Minute)
		res, err := sc.redeem(sc.agent, id, "payroll", ssn)
		if err != nil || res[0].Status != StatusDenied || res[0].Value != nil {
			t.Fatalf("redeem under an expired grant: %+v, %v", res, err)
		}
	})

	t.Run("approvals survive a restart", func(t *testing.T) {
		t.Parallel()
		sc := newApprovalScene(t)
		ssn, id, _ := sc.holdSSN(GrantRequest{}, true)
		sc.restart()
		res, err := sc.redeem(sc.agent, id, "payroll", ssn)
		if err != nil || res[0].Status != StatusOK || string(res[0].Value) != `"123-45-6789"` {
			t.Fatalf("redeem after restart: %+v, %v", res, err)
		}
	})
}

// TestApprovalRedeemRace has 20 redemptions of one approval race: exactly
// one reveals.
func TestApprovalRedeemRace(t *testing.T) {
	t.Parallel()
	sc := newApprovalScene(t)
	ssn, id, _ := sc.holdSSN(GrantRequest{}, true)
	wins := make(chan bool, 20)
	for range 20 {
		go func() {
			res, err := sc.redeem(sc.agent, id, "payroll", ssn)
			wins <- err == nil && res[0].Status == StatusOK
		}()
	}
	n := 0
	for range 20 {
		if <-wins {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d redemptions revealed, want exactly 1", n)
	}
}

// TestApprovalEvents checks the notifications: one event per transition,
// after it is durable, and none holding a value.
func TestApprovalEvents(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var events []string
	var seen []Approval
	e := newEnvTuned(t, func(c *Config) {
		c.OnApproval = func(ev string, a Approval) {
			mu.Lock()
			events, seen = append(events, ev+" "+a.Status), append(seen, a)
			mu.Unlock()
		}
	})
	ctx := context.Background()
	e.mustCollection(hrSchema)
	agent, _, _ := e.svc.CreatePrincipal(ctx, RequestMeta{}, "bot", []Role{RoleAgent})
	approver, _, _ := e.svc.CreatePrincipal(ctx, RequestMeta{}, "carol", []Role{RoleApprover})
	recs, err := e.svc.CreateRecords(ctx, RequestMeta{}, "hr", []map[string]json.RawMessage{fields("ssn", "123-45-6789")})
	if err != nil {
		t.Fatal(err)
	}
	ssn := tokenOf(t, recs[0], "ssn")
	if _, err := e.svc.CreateGrant(ctx, RequestMeta{}, GrantRequest{PrincipalID: agent.ID, Collection: "hr", Fields: []string{"ssn"}, Purpose: "p", TTL: "72h", Reveal: RevealPlain}); err != nil {
		t.Fatal(err)
	}
	ask := func() string {
		res, err := e.svc.Detokenize(ctx, RequestMeta{Actor: agent}, DetokenizeRequest{Tokens: []string{ssn}, Purpose: "p"})
		if err != nil {
			t.Fatal(err)
		}
		return held(t, res)
	}
	a1 := ask()
	if _, err := e.svc.DecideApproval(ctx, RequestMeta{Actor: approver}, a1, true, "ok"); err != nil {
		t.Fatal(err)
	}
	a2 := ask()
	if _, err := e.svc.DecideApproval(ctx, RequestMeta{Actor: approver}, a2, false, "no"); err != nil {
		t.Fatal(err)
	}
	// A refused decision sends nothing.
	if _, err := e.svc.DecideApproval(ctx, RequestMeta{Actor: agent}, a2, true, "me"); err == nil {
		t.Fatal("a second decision was accepted")
	}
	ask()
	e.clock.advance(25 * time.Hour)
	if _, err := e.svc.ExpireApprovals(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{
		"approval.requested pending", "approval.approved approved",
		"approval.requested pending", "approval.denied denied",
		"approval.requested pending",
		// The sweep expires the undecided third request and the first one,
		// approved but never redeemed within its window.
	}
	if len(events) != 7 || strings.Join(events[:5], ",") != strings.Join(want, ",") {
		t.Fatalf("events:\n%v", events)
	}
	for _, ev := range events[5:] {
		if ev != "approval.expired expired" {
			t.Fatalf("sweep events: %v", events[5:])
		}
	}
	raw, _ := json.Marshal(seen)
	if strings.Contains(string(raw), "123-45-6789") || strings.Contains(string(raw), ssn) {
		t.Fatal("an event holds the value or the token")
	}
}

// dueKeys maps the id of every approval with a due key to its deadline,
// as an offset from base.
func dueKeys(t *testing.T, e *env, base time.Time) map[string]time.Duration {
	t.Helper()
	out := map[string]time.Duration{}
	err := e.store.View(func(txn storage.Txn) error {
		return eachDue(txn, func(deadline int64, id string) (bool, error) {
			out[id] = time.Unix(0, deadline).Sub(base)
			return true, nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestApprovalDueIndex: exactly the open approvals have due keys, at their
// deadlines; the sweeper expires what they say is due; and a database from
// before the keys existed gets them at start.
func TestApprovalDueIndex(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sc := newApprovalScene(t)
	base := sc.clock.now()
	ask := func(purpose string) (ssn, id string) {
		ssn = tokenOf(t, sc.recA, "ssn")
		sc.grant(GrantRequest{Fields: []string{"ssn"}, Reveal: RevealPlain, Purpose: purpose, TTL: "72h"})
		return ssn, held(t, sc.detok(sc.agent, purpose, ssn))
	}
	_, pending := ask("pending")
	_, approved := ask("approved")
	_, denied := ask("denied")
	ssn, redeemed := ask("redeemed")
	for id, yes := range map[string]bool{approved: true, denied: false, redeemed: true} {
		if _, err := sc.decide(sc.approver, id, yes, "ticket 7"); err != nil {
			t.Fatal(err)
		}
	}
	if res, err := sc.redeem(sc.agent, redeemed, "redeemed", ssn); err != nil || res[0].Status != StatusOK {
		t.Fatalf("redeem: %+v %v", res, err)
	}
	want := map[string]time.Duration{pending: 24 * time.Hour, approved: 15 * time.Minute}
	if got := dueKeys(t, sc.env, base); !reflect.DeepEqual(got, want) {
		t.Fatalf("due keys %v, want %v", got, want)
	}
	// Listing by an open status reads the due keys; every listing agrees
	// with the approvals' own statuses.
	listed := func(status string) []string {
		t.Helper()
		as, err := sc.svc.ListApprovals(ctx, sc.approver, status)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, a := range as {
			ids = append(ids, a.ID)
		}
		return ids
	}
	for status, ids := range map[string][]string{
		ApprovalPending: {pending}, ApprovalApproved: {approved}, ApprovalDenied: {denied}, ApprovalRedeemed: {redeemed},
	} {
		if got := listed(status); !reflect.DeepEqual(got, ids) {
			t.Errorf("%s approvals %v, want %v", status, got, ids)
		}
	}
	if got := listed(""); len(got) != 4 {
		t.Errorf("all approvals: %v", got)
	}

	sc.clock.advance(15 * time.Minute)
	if n, err := sc.svc.ExpireApprovals(ctx); n != 1 || err != nil {
		t.Fatalf("sweep at the redemption deadline expired %d, %v; want the approved one", n, err)
	}
	if a, _ := sc.svc.GetApproval(ctx, sc.approver, approved); a.Status != ApprovalExpired {
		t.Fatalf("approved-unredeemed after its window: %s", a.Status)
	}
	want = map[string]time.Duration{pending: 24 * time.Hour}
	if got := dueKeys(t, sc.env, base); !reflect.DeepEqual(got, want) {
		t.Fatalf("due keys after the sweep %v, want %v", got, want)
	}
	if got := listed(ApprovalApproved); len(got) != 0 {
		t.Errorf("approved after the sweep: %v", got)
	}
	if got := listed(ApprovalExpired); !reflect.DeepEqual(got, []string{approved}) {
		t.Errorf("expired after the sweep: %v", got)
	}

	// A database from before due keys: drop them and the marker, restart.
	err := sc.store.Update(context.Background(), false, func(txn storage.Txn) error {
		for id, d := range dueKeys(t, sc.env, base) {
			if err := txn.Delete(approvalDueKey(base.Add(d), id)); err != nil {
				return err
			}
		}
		return txn.Delete(approvalDueReady)
	})
	if err != nil {
		t.Fatal(err)
	}
	sc.restart()
	if got := dueKeys(t, sc.env, base); !reflect.DeepEqual(got, want) {
		t.Fatalf("due keys rebuilt at start %v, want %v", got, want)
	}
	sc.clock.advance(24 * time.Hour)
	if n, err := sc.svc.ExpireApprovals(ctx); n != 1 || err != nil {
		t.Fatalf("sweep after the decision window expired %d, %v", n, err)
	}
	if got := dueKeys(t, sc.env, base); len(got) != 0 {
		t.Fatalf("due keys left: %v", got)
	}
}

// TestApprovalReasonIsPrintable: a reason is shown in the console and the
// audit log, so characters that change how a line reads are refused.
func TestApprovalReasonIsPrintable(t *testing.T) {
	t.Parallel()
	sc := newApprovalScene(t)
	_, id, _ := sc.holdSSN(GrantRequest{}, false)
	for _, reason := range []string{"ok\ndecided_by: admin", "ticket \u202e7-RH", "ok\u2028", "ok\x00", "ok\u200b", "bad \xff utf-8"} {
		_, err := sc.decide(sc.approver, id, true, reason)
		wantErr(t, err, ErrInvalid, "invalid_reason")
	}
	if a, err := sc.decide(sc.approver, id, true, "Ticket HR-7 — approved by Zoë"); err != nil || a.Status != ApprovalApproved {
		t.Fatalf("a printable reason in any script: %+v, %v", a, err)
	}
}
