package vault

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentvault/agentvault/storage"
	"github.com/agentvault/agentvault/tokenizer"
	"github.com/agentvault/agentvault/vault/auditlog"
)

// scene is a collection with two records and three principals.
type scene struct {
	*env
	agent, other, writer *Principal
	recA, recB           Record
}

var hrSchema = Collection{Name: "hr", Fields: []Field{
	{Name: "dept", Type: TypeString},
	{Name: "name", Type: TypeString, Sensitive: true},
	{Name: "salary", Type: TypeNumber, Sensitive: true},
	{Name: "card", Type: TypeString, Sensitive: true, Token: tokenizer.KindFormatPreserving, Format: tokenizer.FormatCard},
	{Name: "bonus", Type: TypeNumber, Sensitive: true, ApprovalAbove: num(1000)},
	{Name: "ssn", Type: TypeString, Sensitive: true, Approval: "always"},
}}

func newScene(t *testing.T) *scene {
	e := newEnv(t)
	e.mustCollection(hrSchema)
	ctx := context.Background()
	sc := &scene{env: e}
	mk := func(name string, roles ...Role) *Principal {
		p, _, err := e.svc.CreatePrincipal(ctx, RequestMeta{}, name, roles)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	sc.agent, sc.other, sc.writer = mk("agent", RoleAgent), mk("other", RoleAgent), mk("writer", RoleWriter)
	recs, err := e.svc.CreateRecords(ctx, RequestMeta{Actor: sc.writer}, "hr", []map[string]json.RawMessage{
		fields("dept", "eng", "name", "Ann", "salary", 120000, "card", "4111111111111234", "bonus", 500, "ssn", "123-45-6789"),
		fields("dept", "ops", "name", "Bo", "salary", 90000, "bonus", 5000),
	})
	if err != nil {
		t.Fatal(err)
	}
	sc.recA, sc.recB = recs[0], recs[1]
	return sc
}

func (sc *scene) grant(req GrantRequest) *Grant {
	sc.t.Helper()
	if req.PrincipalID == "" {
		req.PrincipalID = sc.agent.ID
	}
	if req.Collection == "" {
		req.Collection = "hr"
	}
	if req.TTL == "" && req.ExpiresAt == nil {
		req.TTL = "1h"
	}
	if req.Purpose == "" {
		req.Purpose = "payroll"
	}
	g, err := sc.svc.CreateGrant(context.Background(), RequestMeta{}, req)
	if err != nil {
		sc.t.Fatal(err)
	}
	return g
}

func (sc *scene) detok(as *Principal, purpose string, toks ...string) []DetokenizeResult {
	sc.t.Helper()
	res, err := sc.svc.Detokenize(context.Background(), RequestMeta{Actor: as}, DetokenizeRequest{Tokens: toks, Purpose: purpose})
	if err != nil {
		sc.t.Fatal(err)
	}
	return res
}

func TestGrantValidation(t *testing.T) {
	t.Parallel()
	sc := newScene(t)
	past := sc.clock.now().Add(-time.Minute)
	neg := -1
	tests := []struct {
		name string
		req  GrantRequest
		code string
	}{
		{"not an agent", GrantRequest{PrincipalID: sc.writer.ID}, "not_an_agent"},
		{"unknown principal", GrantRequest{PrincipalID: "nobody"}, "unknown_principal"},
		{"unknown collection", GrantRequest{Collection: "nope"}, "unknown_collection"},
		{"unknown field", GrantRequest{Fields: []string{"nickname"}}, "unknown_field"},
		{"field listed twice", GrantRequest{Fields: []string{"name", "dept", "name"}}, "invalid_fields"},
		{"no fields", GrantRequest{}, "invalid_fields"},
		{"zero ttl", GrantRequest{Fields: []string{"name"}, TTL: "0s"}, "invalid_ttl"},
		{"negative ttl", GrantRequest{Fields: []string{"name"}, TTL: "-5m"}, "invalid_ttl"},
		{"garbage ttl", GrantRequest{Fields: []string{"name"}, TTL: "soon"}, "invalid_ttl"},
		{"expiry in the past", GrantRequest{Fields: []string{"name"}, ExpiresAt: &past}, "invalid_expiry"},
		{"negative max uses", GrantRequest{Fields: []string{"name"}, MaxUses: -1}, "invalid_max_uses"},
		{"bad reveal", GrantRequest{Fields: []string{"name"}, Reveal: "partly"}, "invalid_reveal"},
		{"bad record id", GrantRequest{Fields: []string{"name"}, RecordIDs: []string{"x"}}, "invalid_record_ids"},
		{"negative approval_over", GrantRequest{Fields: []string{"name"}, ApprovalOver: &neg}, "invalid_approval_over"},
		// An empty allow-list would allow nothing; absent means every record.
		{"empty record ids", GrantRequest{Fields: []string{"name"}, RecordIDs: []string{}}, "invalid_record_ids"},
		{"purpose with a bidi override", GrantRequest{Fields: []string{"name"}, Purpose: "payroll\u202egnikcart"}, "invalid_purpose"},
		{"purpose with a newline", GrantRequest{Fields: []string{"name"}, Purpose: "payroll\nallowed: everything"}, "invalid_purpose"},
		{"purpose with a zero-width joiner", GrantRequest{Fields: []string{"name"}, Purpose: "pay\u200droll"}, "invalid_purpose"},
		{"purpose not UTF-8", GrantRequest{Fields: []string{"name"}, Purpose: "pay\xffroll"}, "invalid_purpose"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := tt.req
			if req.PrincipalID == "" {
				req.PrincipalID = sc.agent.ID
			}
			if req.Collection == "" {
				req.Collection = "hr"
			}
			if req.TTL == "" && req.ExpiresAt == nil && tt.code != "invalid_ttl" {
				req.TTL = "1h"
			}
			if req.Purpose == "" {
				req.Purpose = "payroll"
			}
			_, err := sc.svc.CreateGrant(context.Background(), RequestMeta{}, req)
			var de *Error
			if !errors.As(err, &de) || !errors.Is(err, ErrInvalid) || de.Code != tt.code {
				t.Fatalf("err = %v, want invalid %s", err, tt.code)
			}
		})
	}
	if gs, _ := sc.svc.ListGrants(context.Background(), GrantFilter{}); len(gs) != 0 {
		t.Fatalf("%d grants stored by rejected requests", len(gs))
	}
}

func TestDetokenizeScopes(t *testing.T) {
	t.Parallel()
	sc := newScene(t)
	ctx := context.Background()
	A, B := sc.recA, sc.recB
	nameA, nameB := tokenOf(t, A, "name"), tokenOf(t, B, "name")
	salA, salB := tokenOf(t, A, "salary"), tokenOf(t, B, "salary")
	cardA := tokenOf(t, A, "card")
	bonusA, bonusB, ssnA := tokenOf(t, A, "bonus"), tokenOf(t, B, "bonus"), tokenOf(t, A, "ssn")

	// Nothing before a grant.
	for _, r := range sc.detok(sc.agent, "payroll", nameA, salA) {
		if r.Status != StatusDenied || r.Value != nil {
			t.Fatalf("no grant: %+v", r)
		}
	}
	sc.grant(GrantRequest{Fields: []string{"name", "salary", "bonus", "ssn"}, RecordIDs: []string{A.ID}, Reveal: RevealPlain})
	sc.grant(GrantRequest{Fields: []string{"card"}, Reveal: RevealMasked})
	sc.grant(GrantRequest{PrincipalID: sc.other.ID, Fields: []string{"name"}, Reveal: RevealPlain, Purpose: "support"})

	deleted, err := sc.svc.CreateRecords(ctx, RequestMeta{}, "hr", []map[string]json.RawMessage{fields("name", "Gone")})
	if err != nil {
		t.Fatal(err)
	}
	gone := tokenOf(t, deleted[0], "name")
	if err := sc.svc.DeleteRecord(ctx, RequestMeta{}, "hr", deleted[0].ID); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name, purpose, token string
		as                   *Principal
		status               string
		value                string
	}{
		{"plain string", "payroll", nameA, sc.agent, StatusOK, `"Ann"`},
		{"plain number keeps its type", "payroll", salA, sc.agent, StatusOK, `120000`},
		{"masked card", "payroll", cardA, sc.agent, StatusMasked, `"************1234"`},
		{"record outside the grant", "payroll", nameB, sc.agent, StatusDenied, ""},
		{"purpose mismatch", "marketing", nameA, sc.agent, StatusDenied, ""},
		{"another agent's grant", "payroll", nameA, sc.other, StatusDenied, ""},
		{"other agent, own purpose", "support", nameB, sc.other, StatusOK, `"Bo"`},
		{"field outside the grant", "support", salB, sc.other, StatusDenied, ""},
		{"approval_above not tripped (= 500 <= 1000)", "payroll", bonusA, sc.agent, StatusOK, `500`},
		{"approval always holds the request", "payroll", ssnA, sc.agent, StatusPending, ""},
		{"deleted record", "payroll", gone, sc.agent, StatusNotFound, ""},
		{"never issued", "payroll", tokenizer.Random(), sc.agent, StatusNotFound, ""},
		{"garbage", "payroll", "not a token \x01", sc.agent, StatusNotFound, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := sc.detok(tt.as, tt.purpose, tt.token)[0]
			if r.Status != tt.status || string(r.Value) != tt.value {
				t.Fatalf("got %s %s (%s), want %s %s", r.Status, r.Value, r.Reason, tt.status, tt.value)
			}
			if r.Status == StatusDenied && r.Reason == "" {
				t.Error("denied without a reason")
			}
		})
	}
	// approval_above tripped on record B (5000 > 1000), even with a grant.
	sc.grant(GrantRequest{Fields: []string{"bonus"}, Reveal: RevealPlain, Purpose: "bonus"})
	if r := sc.detok(sc.agent, "bonus", bonusB)[0]; r.Status != StatusPending || r.Value != nil || r.ApprovalID == "" {
		t.Fatalf("bonus above threshold: %+v", r)
	}
	// Results come back in request order, one per token.
	res := sc.detok(sc.agent, "payroll", nameB, nameA, gone)
	if len(res) != 3 || res[0].Status != StatusDenied || res[1].Status != StatusOK || res[2].Status != StatusNotFound {
		t.Fatalf("mixed batch: %+v", res)
	}
	// Too many tokens and a missing purpose are refused outright.
	many := make([]string, MaxDetokenizeTokens+1)
	for i := range many {
		many[i] = nameA
	}
	if _, err := sc.svc.Detokenize(ctx, RequestMeta{Actor: sc.agent}, DetokenizeRequest{Tokens: many, Purpose: "payroll"}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("over the batch limit: %v", err)
	}
	if _, err := sc.svc.Detokenize(ctx, RequestMeta{Actor: sc.agent}, DetokenizeRequest{Tokens: []string{nameA}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("no purpose: %v", err)
	}
}

func TestGrantExpiryRevocationAndUses(t *testing.T) {
	t.Parallel()
	sc := newScene(t)
	ctx := context.Background()
	nameA := tokenOf(t, sc.recA, "name")
	g := sc.grant(GrantRequest{Fields: []string{"name"}, Reveal: RevealPlain, TTL: "10m", MaxUses: 2})
	for i := range 2 {
		if r := sc.detok(sc.agent, "payroll", nameA, nameA)[0]; r.Status != StatusOK {
			t.Fatalf("use %d: %+v", i+1, r)
		}
	}
	if r := sc.detok(sc.agent, "payroll", nameA)[0]; r.Status != StatusDenied {
		t.Fatalf("third use of a 2-use grant: %+v", r)
	}
	gs, _ := sc.svc.ListGrants(ctx, GrantFilter{State: GrantExhausted})
	if len(gs) != 1 || gs[0].Uses != 2 {
		t.Fatalf("exhausted grants: %+v", gs)
	}

	g2 := sc.grant(GrantRequest{Fields: []string{"name"}, Reveal: RevealPlain, TTL: "10m"})
	if r := sc.detok(sc.agent, "payroll", nameA)[0]; r.Status != StatusOK {
		t.Fatalf("fresh grant: %+v", r)
	}
	sc.clock.advance(10 * time.Minute)
	if r := sc.detok(sc.agent, "payroll", nameA)[0]; r.Status != StatusDenied {
		t.Fatalf("expired grant revealed: %+v", r)
	}
	// Both earlier grants are past their expiry now; expiry wins over exhaustion.
	if gs, _ := sc.svc.ListGrants(ctx, GrantFilter{State: GrantExpired}); len(gs) != 2 || (gs[0].ID != g2.ID && gs[1].ID != g2.ID) {
		t.Fatalf("expired grants: %+v", gs)
	}

	sc.grant(GrantRequest{Fields: []string{"name"}, Reveal: RevealPlain})
	g3, _ := sc.svc.ListGrants(ctx, GrantFilter{State: GrantLive})
	if err := sc.svc.RevokeGrant(ctx, RequestMeta{}, g3[0].ID); err != nil {
		t.Fatal(err)
	}
	if r := sc.detok(sc.agent, "payroll", nameA)[0]; r.Status != StatusDenied {
		t.Fatalf("revoked grant revealed: %+v", r)
	}
	// Uses and revocation survive a restart.
	sc.restart()
	gs, _ = sc.svc.ListGrants(ctx, GrantFilter{PrincipalID: sc.agent.ID})
	states, uses := map[string]string{}, map[string]int{}
	for _, x := range gs {
		states[x.ID], uses[x.ID] = x.State, x.Uses
	}
	if uses[g.ID] != 2 || uses[g2.ID] != 1 || states[g3[0].ID] != GrantRevoked {
		t.Fatalf("after restart: states %v uses %v", states, uses)
	}
	if err := sc.svc.RevokeGrant(ctx, RequestMeta{}, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("revoke unknown grant: %v", err)
	}
}

// TestMaxUsesRace has 50 requests race for a grant's last use: exactly one
// gets the value.
func TestMaxUsesRace(t *testing.T) {
	t.Parallel()
	sc := newScene(t)
	nameA := tokenOf(t, sc.recA, "name")
	sc.grant(GrantRequest{Fields: []string{"name"}, Reveal: RevealPlain, MaxUses: 3})
	sc.detok(sc.agent, "payroll", nameA)
	sc.detok(sc.agent, "payroll", nameA)
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := sc.svc.Detokenize(context.Background(), RequestMeta{Actor: sc.agent}, DetokenizeRequest{Tokens: []string{nameA}, Purpose: "payroll"})
			if err != nil {
				t.Error(err)
				return
			}
			if res[0].Status == StatusOK {
				wins.Add(1)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d requests won the last use, want exactly 1", wins.Load())
	}
	if v, _ := sc.svc.VerifyAudit(context.Background()); !v.OK {
		t.Fatalf("chain broken under concurrency: %+v", v)
	}
}

// TestUsesCountedInBatches: reveals that the writer commits together in
// one batch each spend their grant's use, and the grant is stored once
// per batch with every use counted, in the store and in memory.
func TestUsesCountedInBatches(t *testing.T) {
	t.Parallel()
	sc := newScene(t)
	nameA := tokenOf(t, sc.recA, "name")
	g := sc.grant(GrantRequest{Fields: []string{"name"}, Reveal: RevealPlain})
	const n = 60
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := sc.svc.Detokenize(context.Background(), RequestMeta{Actor: sc.agent}, DetokenizeRequest{Tokens: []string{nameA}, Purpose: "payroll"})
			if err != nil || res[0].Status != StatusOK {
				t.Errorf("reveal: %v %+v", err, res)
			}
		}()
	}
	wg.Wait()
	var stored *Grant
	if err := sc.svc.store.View(func(txn storage.Txn) (err error) {
		stored, err = readGrant(txn, g.ID)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if stored.Uses != n {
		t.Fatalf("stored grant counts %d uses after %d reveals", stored.Uses, n)
	}
	listed, err := sc.svc.ListGrants(context.Background(), GrantFilter{PrincipalID: sc.agent.ID})
	if err != nil || len(listed) != 1 || listed[0].Uses != n {
		t.Fatalf("listed grants: %v %+v, want one with %d uses", err, listed, n)
	}
}

// TestRevealsLoadingACollectionAtOnce: many reveals that all find their
// collection not yet in memory (after a start, or after another node
// changed it) load it without waiting on one another for ever. On
// PostgreSQL each reveal's read holds a pooled connection; loading the
// collection through a transaction of its own, under the load lock, once
// left every connection of the pool held by reveals waiting for that
// lock, and its holder waiting for a connection (seen in CI).
func TestRevealsLoadingACollectionAtOnce(t *testing.T) {
	t.Parallel()
	sc := newScene(t)
	nameA := tokenOf(t, sc.recA, "name")
	sc.grant(GrantRequest{Fields: []string{"name"}, Reveal: RevealPlain})
	for round := range 5 {
		sc.svc.cmu.Lock()
		clear(sc.svc.collections)
		sc.svc.cmu.Unlock()
		const n = 32
		errs := make(chan error, n)
		for range n {
			go func() {
				res, err := sc.svc.Detokenize(context.Background(), RequestMeta{Actor: sc.agent}, DetokenizeRequest{Tokens: []string{nameA}, Purpose: "payroll"})
				if err == nil && res[0].Status != StatusOK {
					err = fmt.Errorf("%+v", res[0])
				}
				errs <- err
			}()
		}
		deadline := time.After(time.Minute)
		for range n {
			select {
			case err := <-errs:
				if err != nil {
					t.Fatalf("round %d: reveal: %v", round, err)
				}
			case <-deadline:
				t.Fatalf("round %d: reveals loading their collection at once did not finish in a minute", round)
			}
		}
	}
}

// TestFailClosed makes the audit write fail: the reveal fails, reveals
// nothing, spends no use, and the chain stays whole.
func TestFailClosed(t *testing.T) {
	t.Parallel()
	sc := newScene(t)
	nameA := tokenOf(t, sc.recA, "name")
	sc.grant(GrantRequest{Fields: []string{"name"}, Reveal: RevealPlain, MaxUses: 5})
	if r := sc.detok(sc.agent, "payroll", nameA)[0]; r.Status != StatusOK {
		t.Fatal(r)
	}
	fault := errors.New("injected: audit storage failed")
	sc.svc.writer.fault.Store(&fault)
	res, err := sc.svc.Detokenize(context.Background(), RequestMeta{Actor: sc.agent}, DetokenizeRequest{Tokens: []string{nameA}, Purpose: "payroll"})
	if !errors.Is(err, ErrUnavailable) || res != nil {
		t.Fatalf("with the audit log failing: %v, %+v; want ErrUnavailable and nothing", err, res)
	}
	if _, err := sc.svc.CreateRecords(context.Background(), RequestMeta{}, "hr", []map[string]json.RawMessage{fields("name", "x")}); err == nil {
		t.Fatal("a write succeeded without its audit entry")
	}
	sc.svc.writer.fault.Store(nil)
	gs, _ := sc.svc.ListGrants(context.Background(), GrantFilter{})
	if gs[0].Uses != 1 {
		t.Fatalf("the failed request spent a use: %d", gs[0].Uses)
	}
	if r := sc.detok(sc.agent, "payroll", nameA)[0]; r.Status != StatusOK {
		t.Fatalf("after the fault cleared: %+v", r)
	}
	if v, _ := sc.svc.VerifyAudit(context.Background()); !v.OK {
		t.Fatalf("chain after a failed append: %+v", v)
	}
}

// TestAuditEntries checks what the log says about a reveal, and that it
// holds no value and no raw token.
func TestAuditEntries(t *testing.T) {
	t.Parallel()
	sc := newScene(t)
	ctx := context.Background()
	nameA, cardA := tokenOf(t, sc.recA, "name"), tokenOf(t, sc.recA, "card")
	g := sc.grant(GrantRequest{Fields: []string{"name"}, Reveal: RevealPlain})
	if _, err := sc.svc.Detokenize(ctx, RequestMeta{Actor: sc.agent, RequestID: "req-42", RemoteAddr: "127.0.0.1:9"}, DetokenizeRequest{Tokens: []string{nameA, cardA}, Purpose: "payroll"}); err != nil {
		t.Fatal(err)
	}
	es, _, err := sc.svc.ListAudit(ctx, AuditFilter{Action: "detokenize"})
	if err != nil || len(es) != 1 {
		t.Fatalf("detokenize entries: %d, %v", len(es), err)
	}
	e := es[0]
	if e.Actor != sc.agent.ID || e.Purpose != "payroll" || e.RequestID != "req-42" || e.RemoteAddr != "127.0.0.1:9" || e.Decision != DecisionPartial || e.GrantID != g.ID {
		t.Fatalf("entry: %+v", e)
	}
	if len(e.Tokens) != 2 || e.Tokens[0].Decision != DecisionAllowed || e.Tokens[1].Decision != StatusDenied || e.Tokens[0].RecordID != sc.recA.ID || e.Tokens[1].Field != "card" {
		t.Fatalf("token decisions: %+v", e.Tokens)
	}
	raw, _ := json.Marshal(es)
	for _, secret := range []string{"Ann", nameA, cardA, "4111111111111234"} {
		if contains(raw, secret) {
			t.Errorf("audit entry contains %q", secret)
		}
	}
	// Every kind of change is in the log.
	if err := sc.svc.DeleteRecord(ctx, RequestMeta{}, "hr", sc.recB.ID); err != nil {
		t.Fatal(err)
	}
	all, _, _ := sc.svc.ListAudit(ctx, AuditFilter{Limit: 1000})
	actions := map[string]bool{}
	for _, e := range all {
		actions[e.Action] = true
	}
	for _, a := range []string{"collection.create", "principal.create", "records.create", "records.delete", "grant.create", "detokenize", "key.create"} {
		if !actions[a] {
			t.Errorf("no %s entry", a)
		}
	}
	// Paging.
	page, next, _ := sc.svc.ListAudit(ctx, AuditFilter{Limit: 2})
	rest, _, _ := sc.svc.ListAudit(ctx, AuditFilter{After: next, Limit: 2})
	if len(page) != 2 || next != page[1].Seq || rest[0].Seq != next+1 {
		t.Fatalf("paging: %d entries, next %d, then %d", len(page), next, rest[0].Seq)
	}
	// Newest first, paged backwards with Before.
	head, _, _ := sc.svc.AuditHead(ctx)
	newest, before, _ := sc.svc.ListAudit(ctx, AuditFilter{Newest: true, Limit: 2})
	older, _, _ := sc.svc.ListAudit(ctx, AuditFilter{Newest: true, Before: before, Limit: 2})
	if len(newest) != 2 || newest[0].Seq != head || newest[1].Seq != head-1 || before != head-1 || older[0].Seq != head-2 {
		t.Fatalf("newest first: head %d, got %d,%d, before %d, then %d", head, newest[0].Seq, newest[1].Seq, before, older[0].Seq)
	}
	if first, next, _ := sc.svc.ListAudit(ctx, AuditFilter{Newest: true, Before: 2}); len(first) != 1 || first[0].Seq != 1 || next != 0 {
		t.Fatalf("newest first before seq 2: %+v, next %d", first, next)
	}
}

func contains(b []byte, s string) bool { return len(s) > 0 && json.Valid(b) && stringIn(string(b), s) }

func stringIn(h, n string) bool {
	for i := 0; i+len(n) <= len(h); i++ {
		if h[i:i+len(n)] == n {
			return true
		}
	}
	return false
}

// TestAuditTamper changes the stored log the ways an attacker would and
// checks that verification names the first bad entry each time.
func TestAuditTamper(t *testing.T) {
	t.Parallel()
	type tamper func(t *testing.T, txn storage.Txn, n uint64)
	stored := func(t *testing.T, txn storage.Txn, seq uint64) []byte {
		item, err := txn.Get(auditKey(seq))
		if err != nil {
			t.Fatal(err)
		}
		v, _ := item.ValueCopy(nil)
		return v
	}
	// get is an entry's JSON (its stored form may be binary).
	get := func(t *testing.T, txn storage.Txn, seq uint64) []byte {
		v, err := auditlog.Decode(stored(t, txn, seq))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	edit := func(t *testing.T, txn storage.Txn, seq uint64, f func(e *AuditEntry)) {
		var e AuditEntry
		json.Unmarshal(get(t, txn, seq), &e)
		f(&e)
		b, _ := json.Marshal(e)
		txn.Set(auditKey(seq), b)
	}
	tests := []struct {
		name    string
		tamper  tamper
		wantBad uint64
	}{
		{"changed field", func(t *testing.T, txn storage.Txn, n uint64) {
			edit(t, txn, 5, func(e *AuditEntry) { e.Purpose = "something else" })
		}, 5},
		{"changed field with recomputed hash", func(t *testing.T, txn storage.Txn, n uint64) {
			edit(t, txn, 5, func(e *AuditEntry) { e.Actor = "someone-else"; e.Hash = auditlog.Hash(e) })
		}, 6},
		{"extra byte in stored entry", func(t *testing.T, txn storage.Txn, n uint64) {
			b := get(t, txn, 4)
			txn.Set(auditKey(4), append(b[:len(b)-1], []byte(`,"x":1}`)...))
		}, 4},
		{"changed byte in a binary entry", func(t *testing.T, txn storage.Txn, n uint64) {
			b := stored(t, txn, 4)
			if b[0] != 0x02 {
				t.Fatalf("entry 4 is not stored binary: %q", b)
			}
			b[len(b)-40] ^= 0x01 // inside the previous hash
			txn.Set(auditKey(4), b)
		}, 4},
		{"deleted entry", func(t *testing.T, txn storage.Txn, n uint64) { txn.Delete(auditKey(3)) }, 3},
		{"reordered entries", func(t *testing.T, txn storage.Txn, n uint64) {
			a, b := get(t, txn, 6), get(t, txn, 7)
			txn.Set(auditKey(6), b)
			txn.Set(auditKey(7), a)
		}, 6},
		{"garbage entry", func(t *testing.T, txn storage.Txn, n uint64) { txn.Set(auditKey(2), []byte("{not json")) }, 2},
		{"inserted entry", func(t *testing.T, txn storage.Txn, n uint64) {
			k := binary.BigEndian.AppendUint64([]byte("a/"), n+5)
			txn.Set(k, get(t, txn, n))
		}, 0}, // filled in below: n+1
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sc := newScene(t)
			sc.grant(GrantRequest{Fields: []string{"name"}, Reveal: RevealPlain})
			for range 3 {
				sc.detok(sc.agent, "payroll", tokenOf(t, sc.recA, "name"))
			}
			ctx := context.Background()
			before, err := sc.svc.VerifyAudit(ctx)
			if err != nil || !before.OK || before.Entries < 8 {
				t.Fatalf("before tampering: %+v %v", before, err)
			}
			if err := sc.store.Update(ctx, false, func(txn storage.Txn) error { tt.tamper(t, txn, before.Entries); return nil }); err != nil {
				t.Fatal(err)
			}
			want := tt.wantBad
			if want == 0 {
				want = before.Entries + 1
			}
			got, err := sc.svc.VerifyAudit(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if got.OK || got.FirstBadSeq != want || got.Reason == "" {
				t.Fatalf("verify after %s = %+v, want first bad %d", tt.name, got, want)
			}
			t.Logf("%s: %s", tt.name, got.Reason)
		})
	}
}

func TestAuditChainUnderConcurrency(t *testing.T) {
	t.Parallel()
	sc := newScene(t)
	sc.grant(GrantRequest{Fields: []string{"name", "salary"}, Reveal: RevealPlain})
	sc.detok(sc.agent, "payroll", tokenOf(t, sc.recA, "name")) // creates the token-hash key first
	before, _ := sc.svc.VerifyAudit(context.Background())
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				if w%4 == 0 {
					sc.svc.CreateRecords(context.Background(), RequestMeta{}, "hr", []map[string]json.RawMessage{fields("name", fmt.Sprint(w, i))})
				} else {
					sc.svc.Detokenize(context.Background(), RequestMeta{Actor: sc.agent}, DetokenizeRequest{Tokens: []string{tokenOf(t, sc.recA, "name"), tokenOf(t, sc.recA, "salary")}, Purpose: "payroll"})
				}
			}
		}()
	}
	wg.Wait()
	after, err := sc.svc.VerifyAudit(context.Background())
	if err != nil || !after.OK || after.Entries != before.Entries+16*20 {
		t.Fatalf("after 320 concurrent requests: %+v (before %d) %v", after, before.Entries, err)
	}
	// The head survives a restart and the chain goes on from it.
	sc.restart() // signs a final checkpoint, creating the signing key on first use
	reopened, _ := sc.svc.VerifyAudit(context.Background())
	sc.detok(sc.agent, "payroll", tokenOf(t, sc.recA, "name"))
	if v, _ := sc.svc.VerifyAudit(context.Background()); !v.OK || v.Entries != reopened.Entries+1 || v.Checkpoints != 1 {
		t.Fatalf("after restart: %+v (reopened with %+v)", v, reopened)
	}
}
