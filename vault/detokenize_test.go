package vault

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/agentvault/agentvault/storage"
	"github.com/agentvault/agentvault/tokenizer"
)

// TestApprovalCoversOnlyWhatWasShown is the reproduction from the security
// review: an approval must reveal exactly the values its approver was
// shown, under the grants they were shown with, and nothing added later.
func TestApprovalCoversOnlyWhatWasShown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("a token denied at request time stays outside the approval", func(t *testing.T) {
		t.Parallel()
		sc := newApprovalScene(t)
		recC := sc.record("name", "Cy", "ssn", "987-65-4321")
		ssnA, ssnC := tokenOf(t, sc.recA, "ssn"), tokenOf(t, recC, "ssn")
		sc.grant(GrantRequest{Fields: []string{"ssn"}, RecordIDs: []string{sc.recA.ID}, Reveal: RevealPlain})

		res := sc.detok(sc.agent, "payroll", ssnA, ssnC)
		if res[0].Status != StatusPending || res[1].Status != StatusDenied {
			t.Fatalf("request: %+v", res)
		}
		id := res[0].ApprovalID
		shown, err := sc.svc.GetApproval(ctx, sc.approver, id)
		if err != nil || !slices.Equal(shown.RecordIDs, []string{sc.recA.ID}) || shown.TokenCount != 1 {
			t.Fatalf("the approver is shown %+v, %v", shown, err)
		}
		if _, err := sc.decide(sc.approver, id, true, "A only"); err != nil {
			t.Fatal(err)
		}
		// Record C becomes grantable after the approval.
		sc.grant(GrantRequest{Fields: []string{"ssn"}, RecordIDs: []string{recC.ID}, Reveal: RevealPlain})

		res, err = sc.redeem(sc.agent, id, "payroll", ssnA, ssnC)
		if err != nil {
			t.Fatal(err)
		}
		if res[0].Status != StatusOK || string(res[0].Value) != `"123-45-6789"` {
			t.Fatalf("approved token: %+v", res[0])
		}
		// C is decided as a fresh request: its field always needs approval.
		if res[1].Status != StatusPending || res[1].Value != nil || res[1].ApprovalID == "" || res[1].ApprovalID == id {
			t.Fatalf("token no approver saw: %+v", res[1])
		}
		second, _ := sc.svc.GetApproval(ctx, sc.approver, res[1].ApprovalID)
		if !slices.Equal(second.RecordIDs, []string{recC.ID}) || second.TokenCount != 1 {
			t.Fatalf("the second approval covers %+v", second)
		}
		es, _, _ := sc.svc.ListAudit(ctx, AuditFilter{Action: "detokenize"})
		last := es[len(es)-1]
		if last.Decision != DecisionPartial || last.ApprovalID != id || last.Tokens[0].Decision != DecisionAllowed || last.Tokens[1].Decision != DecisionPending {
			t.Fatalf("redemption entry: %+v", last)
		}
		if _, err := sc.decide(sc.approver, second.ID, true, "C too"); err != nil {
			t.Fatal(err)
		}
		// The second approval covers C alone: A in it is a fresh request again.
		res, err = sc.redeem(sc.agent, second.ID, "payroll", ssnA, ssnC)
		if err != nil || res[1].Status != StatusOK || string(res[1].Value) != `"987-65-4321"` || res[0].Status != StatusPending {
			t.Fatalf("second redemption: %+v, %v", res, err)
		}
	})

	t.Run("redeemed only under the grant it was approved under", func(t *testing.T) {
		t.Parallel()
		sc := newApprovalScene(t)
		ssnA := tokenOf(t, sc.recA, "ssn")
		masked := sc.grant(GrantRequest{Fields: []string{"ssn"}, Reveal: RevealMasked})
		id := held(t, sc.detok(sc.agent, "payroll", ssnA))
		if _, err := sc.decide(sc.approver, id, true, "masked is fine"); err != nil {
			t.Fatal(err)
		}
		if err := sc.svc.RevokeGrant(ctx, RequestMeta{}, masked.ID); err != nil {
			t.Fatal(err)
		}
		sc.grant(GrantRequest{Fields: []string{"ssn"}, Reveal: RevealPlain})
		res, err := sc.redeem(sc.agent, id, "payroll", ssnA)
		if err != nil || res[0].Status != StatusDenied || res[0].Value != nil {
			t.Fatalf("redeemed under another grant: %+v, %v", res, err)
		}
	})

	t.Run("masked approval reveals masked", func(t *testing.T) {
		t.Parallel()
		sc := newApprovalScene(t)
		ssnA := tokenOf(t, sc.recA, "ssn")
		sc.grant(GrantRequest{Fields: []string{"ssn"}, Reveal: RevealMasked})
		id := held(t, sc.detok(sc.agent, "payroll", ssnA))
		sc.grant(GrantRequest{Fields: []string{"ssn"}, Reveal: RevealPlain})
		if _, err := sc.decide(sc.approver, id, true, "masked is fine"); err != nil {
			t.Fatal(err)
		}
		res, err := sc.redeem(sc.agent, id, "payroll", ssnA)
		if err != nil || res[0].Status != StatusMasked || string(res[0].Value) != `"********"` {
			t.Fatalf("redemption: %+v, %v", res, err)
		}
	})
}

// holdWriter blocks the single writer until the returned func is called,
// so a test can change the clock while requests wait for it.
func holdWriter(t *testing.T, svc *Service) (release func()) {
	t.Helper()
	gate, entered := make(chan struct{}), make(chan struct{})
	go svc.writer.apply(&mutation{entry: svc.newEntry(RequestMeta{}, "test.hold"), size: 1, prepare: func(storage.Txn) error {
		close(entered)
		<-gate
		return reject(errors.New("held by the test"))
	}})
	<-entered
	return func() { close(gate) }
}

// waitQueued waits until n mutations wait for the writer.
func waitQueued(t *testing.T, svc *Service, n int) {
	t.Helper()
	for range 5000 {
		if len(svc.writer.reqs) >= n {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("no request reached the writer")
}

// TestWriterReadsTheClock: a grant that expires, or a redemption window
// that closes, while a request waits for the single writer no longer
// reveals: the writer decides against its own reading of the clock.
func TestWriterReadsTheClock(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		run  func(sc *approvalScene) (func() ([]DetokenizeResult, error), time.Duration)
		want func(res []DetokenizeResult, err error) bool
	}{
		{"grant expires while queued", func(sc *approvalScene) (func() ([]DetokenizeResult, error), time.Duration) {
			sc.grant(GrantRequest{Fields: []string{"name"}, Reveal: RevealPlain, TTL: "10m"})
			nameA := tokenOf(sc.t, sc.recA, "name")
			// Reveal once first, so the request below does not wait on the
			// writer for a first-use key.
			if r := sc.detok(sc.agent, "payroll", nameA); r[0].Status != StatusOK {
				sc.t.Fatalf("before: %+v", r)
			}
			return func() ([]DetokenizeResult, error) {
				return sc.svc.Detokenize(context.Background(), RequestMeta{Actor: sc.agent}, DetokenizeRequest{Tokens: []string{nameA}, Purpose: "payroll"})
			}, 10 * time.Minute
		}, func(res []DetokenizeResult, err error) bool {
			return err == nil && res[0].Status == StatusDenied && res[0].Value == nil
		}},
		{"redemption window closes while queued", func(sc *approvalScene) (func() ([]DetokenizeResult, error), time.Duration) {
			ssn, id, _ := sc.holdSSN(GrantRequest{}, true)
			return func() ([]DetokenizeResult, error) { return sc.redeem(sc.agent, id, "payroll", ssn) }, 15 * time.Minute
		}, func(res []DetokenizeResult, err error) bool {
			return res == nil && errors.Is(err, ErrConflict)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sc := newApprovalScene(t)
			call, after := tt.run(sc)
			release := holdWriter(t, sc.svc)
			type answer struct {
				res []DetokenizeResult
				err error
			}
			done := make(chan answer, 1)
			go func() { res, err := call(); done <- answer{res, err} }()
			waitQueued(t, sc.svc, 1)
			sc.clock.advance(after)
			release()
			got := <-done
			if !tt.want(got.res, got.err) {
				t.Fatalf("got %+v, %v", got.res, got.err)
			}
		})
	}
}

// TestDetokenizeCostBoundedByRequest: a request of one deterministic token
// repeated 1,000 times, a token that thousands of records share, costs the
// same whatever the number of records, with or without a grant. The
// measure is allocations, which grow with every record a request reads.
func TestDetokenizeCostBoundedByRequest(t *testing.T) {
	flags := Collection{Name: "flags", Fields: []Field{
		{Name: "on", Type: TypeBoolean, Sensitive: true, Token: tokenizer.KindDeterministic},
	}}
	ctx := context.Background()
	cost := func(records int) (noGrant, granted float64) {
		e := newEnv(t)
		e.mustCollection(flags)
		for n := 0; n < records; n += 5000 {
			in := make([]map[string]json.RawMessage, min(5000, records-n))
			for i := range in {
				in[i] = fields("on", true)
			}
			if _, err := e.svc.CreateRecords(ctx, RequestMeta{}, "flags", in); err != nil {
				t.Fatal(err)
			}
		}
		recs, _ := e.svc.CreateRecords(ctx, RequestMeta{}, "flags", []map[string]json.RawMessage{fields("on", true)})
		tok := tokenOf(t, recs[0], "on")
		req := DetokenizeRequest{Tokens: slices.Repeat([]string{tok}, MaxDetokenizeTokens), Purpose: "ops"}
		agent, _, _ := e.svc.CreatePrincipal(ctx, RequestMeta{}, "bot", []Role{RoleAgent})
		detok := func() {
			res, err := e.svc.Detokenize(ctx, RequestMeta{Actor: agent}, req)
			if err != nil || len(res) != MaxDetokenizeTokens {
				t.Fatalf("detokenize: %v", err)
			}
		}
		noGrant = testing.AllocsPerRun(3, detok)
		if _, err := e.svc.CreateGrant(ctx, RequestMeta{}, GrantRequest{PrincipalID: agent.ID, Collection: "flags",
			Fields: []string{"on"}, Purpose: "ops", TTL: "1h", Reveal: RevealPlain, RecordIDs: []string{recs[0].ID}}); err != nil {
			t.Fatal(err)
		}
		granted = testing.AllocsPerRun(3, detok)
		return noGrant, granted
	}
	smallNo, smallYes := cost(500)
	bigNo, bigYes := cost(10000)
	t.Logf("allocations per request: no grant %.0f -> %.0f, record grant %.0f -> %.0f (500 -> 10,000 records)", smallNo, bigNo, smallYes, bigYes)
	if bigNo > smallNo*1.25+500 || bigYes > smallYes*1.25+500 {
		t.Fatalf("a request's cost grows with the data: no grant %.0f -> %.0f, record grant %.0f -> %.0f allocations", smallNo, bigNo, smallYes, bigYes)
	}
}
