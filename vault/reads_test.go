package vault

import (
	"context"
	"errors"
	"slices"
	"testing"
)

func fieldNames(r *Record) []string {
	var out []string
	for f := range r.Fields {
		out = append(out, f)
	}
	slices.Sort(out)
	return out
}

// TestAgentSeesOnlyWhatGrantsName: an agent sees a collection, a record
// and a field only through a live grant for its purpose; everything else
// answers as if it did not exist, and every read is audited.
func TestAgentSeesOnlyWhatGrantsName(t *testing.T) {
	t.Parallel()
	sc := newScene(t)
	ctx := context.Background()
	as := RequestMeta{Actor: sc.agent, RequestID: "read-1"}
	A, B := sc.recA, sc.recB
	read := func(id, purpose string) (*Record, error) {
		return sc.svc.GetRecord(ctx, as, "hr", id, purpose)
	}

	// No grant: no collection, no record.
	if cs, _ := sc.svc.VisibleCollections(ctx, sc.agent, ""); len(cs) != 0 {
		t.Fatalf("collections without a grant: %+v", cs)
	}
	if _, err := sc.svc.GetCollection(ctx, sc.agent, "hr", ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("schema without a grant: %v", err)
	}
	_, errNoGrant := read(A.ID, "payroll")
	_, errNoColl := sc.svc.GetRecord(ctx, as, "nope", A.ID, "payroll")
	if !errors.Is(errNoGrant, ErrNotFound) || errNoGrant.Error() != "no collection \"hr\"" || !errors.Is(errNoColl, ErrNotFound) {
		t.Fatalf("reads without a grant: %v / %v", errNoGrant, errNoColl)
	}

	// A grant on [dept, name] with reveal none: exactly those two fields,
	// name as its token, and no detokenize.
	g := sc.grant(GrantRequest{Fields: []string{"dept", "name"}, Reveal: RevealNone})
	r, err := read(A.ID, "payroll")
	if err != nil || !slices.Equal(fieldNames(r), []string{"dept", "name"}) || string(r.Fields["dept"]) != `"eng"` || string(r.Fields["name"]) != `"`+tokenOf(t, A, "name")+`"` {
		t.Fatalf("read under a reveal-none grant: %+v %v", r, err)
	}
	if res := sc.detok(sc.agent, "payroll", tokenOf(t, A, "name")); res[0].Status != StatusDenied || res[0].Reason != reasonTokenOnly {
		t.Fatalf("detokenize under reveal none: %+v", res)
	}
	if c, err := sc.svc.GetCollection(ctx, sc.agent, "hr", "payroll"); err != nil || len(c.Fields) != 2 {
		t.Fatalf("schema under the grant: %+v %v", c, err)
	}
	if cs, _ := sc.svc.VisibleCollections(ctx, sc.agent, "support"); len(cs) != 0 {
		t.Fatalf("collections for another purpose: %+v", cs)
	}
	if _, err := read(A.ID, ""); !errors.Is(err, ErrInvalid) {
		t.Fatalf("read without a purpose: %v", err)
	}
	if _, err := read(A.ID, "support"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("read for another purpose: %v", err)
	}

	// A record-scoped grant adds salary for A only: B shows dept and name,
	// A also salary.
	sc.grant(GrantRequest{Fields: []string{"salary"}, RecordIDs: []string{A.ID}, Reveal: RevealPlain})
	if r, _ := read(A.ID, "payroll"); !slices.Equal(fieldNames(r), []string{"dept", "name", "salary"}) {
		t.Fatalf("A: %v", fieldNames(r))
	}
	if r, _ := read(B.ID, "payroll"); !slices.Equal(fieldNames(r), []string{"dept", "name"}) {
		t.Fatalf("B: %v", fieldNames(r))
	}
	// Revoking the wide grant hides B at once (A stays, through the other).
	if err := sc.svc.RevokeGrant(ctx, RequestMeta{}, g.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := read(B.ID, "payroll"); !errors.Is(err, ErrNotFound) || err.Error() != "no record \""+B.ID+"\" in collection \"hr\"" {
		t.Fatalf("B after the revocation: %v", err)
	}
	if r, _ := read(A.ID, "payroll"); !slices.Equal(fieldNames(r), []string{"salary"}) {
		t.Fatalf("A after the revocation: %v", fieldNames(r))
	}
	// A writer sees everything, with or without a purpose.
	if r, err := sc.svc.GetRecord(ctx, RequestMeta{Actor: sc.writer}, "hr", B.ID, ""); err != nil || len(r.Fields) != 4 {
		t.Fatalf("writer read: %+v %v", r, err)
	}

	// Every read left an entry: who, why, which record, which fields.
	es, _, _ := sc.svc.ListAudit(ctx, AuditFilter{Action: "records.read", Limit: 1000})
	if len(es) != 9 {
		t.Fatalf("%d read entries, want 9 (a read refused for want of a purpose reads nothing)", len(es))
	}
	first := es[2] // the first read under the grant
	if first.Actor != sc.agent.ID || first.Purpose != "payroll" || first.RequestID != "read-1" || !slices.Equal(first.RecordIDs, []string{A.ID}) ||
		!slices.Equal(first.Fields, []string{"dept", "name"}) || first.Decision != DecisionOK {
		t.Fatalf("read entry: %+v", first)
	}
	if es[0].Decision != DecisionDenied || es[1].Decision != DecisionDenied {
		t.Fatalf("reads without a grant are audited as denied: %+v %+v", es[0], es[1])
	}
}

// TestReadFailsClosed: if the read's audit entry cannot be written, the
// read returns nothing.
func TestReadFailsClosed(t *testing.T) {
	t.Parallel()
	sc := newScene(t)
	ctx := context.Background()
	fault := errors.New("injected: disk gone")
	sc.svc.writer.fault.Store(&fault)
	rec, err := sc.svc.GetRecord(ctx, RequestMeta{Actor: sc.writer}, "hr", sc.recA.ID, "")
	if rec != nil || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("read with the audit log down: %+v %v", rec, err)
	}
	sc.svc.writer.fault.Store(nil)
	if _, err := sc.svc.GetRecord(ctx, RequestMeta{Actor: sc.writer}, "hr", sc.recA.ID, ""); err != nil {
		t.Fatal(err)
	}
}
