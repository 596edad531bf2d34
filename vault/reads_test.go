package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/agentvault/agentvault/storage"
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
	// An auditor finds every read of one record.
	ofB, _, _ := sc.svc.ListAudit(ctx, AuditFilter{Action: "records.read", RecordID: B.ID})
	if len(ofB) != 3 {
		t.Fatalf("%d reads of record B found, want 3", len(ofB))
	}
}

// TestReadFailsClosed: every read of records, allowed or refused, writes
// its audit entry before it answers; if the entry cannot be written, the
// read returns nothing and says the vault is unavailable.
func TestReadFailsClosed(t *testing.T) {
	t.Parallel()
	sc := newScene(t)
	ctx := context.Background()
	card := tokenOf(t, sc.recA, "card")
	reads := map[string]func(meta RequestMeta, purpose string) (int, error){
		"get": func(meta RequestMeta, purpose string) (int, error) {
			rec, err := sc.svc.GetRecord(ctx, meta, "hr", sc.recA.ID, purpose)
			if rec != nil {
				return 1, err
			}
			return 0, err
		},
		"list": func(meta RequestMeta, purpose string) (int, error) {
			recs, _, err := sc.svc.ListRecords(ctx, meta, "hr", purpose, 0, "")
			return len(recs), err
		},
		"search": func(meta RequestMeta, purpose string) (int, error) {
			recs, _, err := sc.svc.SearchRecords(ctx, meta, "hr", SearchRequest{Where: where("card", card), Purpose: purpose})
			return len(recs), err
		},
	}
	actors := []struct {
		name    string
		meta    RequestMeta
		purpose string
		want    error // the answer with the audit log up
	}{
		{"writer", RequestMeta{Actor: sc.writer}, "", nil},
		{"agent without a grant", RequestMeta{Actor: sc.agent}, "payroll", ErrNotFound},
	}
	fault := errors.New("injected: disk gone")
	for name, read := range reads {
		for _, a := range actors {
			t.Run(name+"/"+a.name, func(t *testing.T) {
				sc.svc.writer.fault.Store(&fault)
				n, err := read(a.meta, a.purpose)
				sc.svc.writer.fault.Store(nil)
				if n != 0 || !errors.Is(err, ErrUnavailable) {
					t.Fatalf("with the audit log down: %d records, %v; want none and unavailable", n, err)
				}
				n, err = read(a.meta, a.purpose)
				if !errors.Is(err, a.want) || (a.want == nil && n == 0) {
					t.Fatalf("with the audit log up: %d records, %v; want %v", n, err, a.want)
				}
			})
		}
	}
}

// listAll pages through a collection, limit records at a time.
func listAll(t *testing.T, svc *Service, meta RequestMeta, purpose string, limit int) []Record {
	t.Helper()
	var all []Record
	after := ""
	for range 10000 {
		page, next, err := svc.ListRecords(context.Background(), meta, "hr", purpose, limit, after)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, page...)
		if next == "" {
			return all
		}
		after = next
	}
	t.Fatal("listing did not end")
	return nil
}

// TestListRecords: pages return every record once, in a stable order,
// also while records are inserted; agents see only what grants cover;
// pages are audited, large ones by count and hash.
func TestListRecords(t *testing.T) {
	t.Parallel()
	sc := newScene(t)
	ctx := context.Background()
	var want []string
	for range 5 {
		var in []map[string]json.RawMessage
		for i := range 50 {
			in = append(in, fields("dept", fmt.Sprint("d", i), "name", "N"))
		}
		recs, err := sc.svc.CreateRecords(ctx, RequestMeta{Actor: sc.writer}, "hr", in)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			want = append(want, r.ID)
		}
	}
	want = append(want, sc.recA.ID, sc.recB.ID)
	slices.Sort(want)

	// Concurrent inserts do not make a listed record appear twice or go
	// missing.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			sc.svc.CreateRecords(ctx, RequestMeta{Actor: sc.writer}, "hr", []map[string]json.RawMessage{fields("dept", "new")})
		}
	}()
	got := listAll(t, sc.svc, RequestMeta{Actor: sc.writer}, "", 37)
	close(stop)
	wg.Wait()
	seen := map[string]bool{}
	for _, r := range got {
		if seen[r.ID] {
			t.Fatalf("record %s listed twice", r.ID)
		}
		seen[r.ID] = true
	}
	for _, id := range want {
		if !seen[id] {
			t.Fatalf("record %s missing from the listing", id)
		}
	}
	if !slices.IsSortedFunc(got, func(a, b Record) int { return strings.Compare(a.ID, b.ID) }) {
		t.Fatal("pages are not in a stable order")
	}

	// An agent: nothing without a grant; with a record-scoped grant, those
	// records only, with the named fields.
	if _, _, err := sc.svc.ListRecords(ctx, RequestMeta{Actor: sc.agent}, "hr", "payroll", 10, ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("agent listing without a grant: %v", err)
	}
	sc.grant(GrantRequest{Fields: []string{"dept"}, RecordIDs: []string{sc.recB.ID, sc.recA.ID}, Reveal: RevealNone})
	mine := listAll(t, sc.svc, RequestMeta{Actor: sc.agent}, "payroll", 1)
	if len(mine) != 2 || !slices.Equal(fieldNames(&mine[0]), []string{"dept"}) {
		t.Fatalf("agent listing under a record grant: %+v", mine)
	}
	for _, bad := range []struct {
		limit int
		after string
	}{{-1, ""}, {MaxPageSize + 1, ""}, {10, "not-a-cursor"}} {
		if _, _, err := sc.svc.ListRecords(ctx, RequestMeta{Actor: sc.writer}, "hr", "", bad.limit, bad.after); !errors.Is(err, ErrInvalid) {
			t.Errorf("limit %d after %q: %v", bad.limit, bad.after, err)
		}
	}

	// Pages are audited: ids for small pages, count and hash for large.
	if _, _, err := sc.svc.ListRecords(ctx, RequestMeta{Actor: sc.writer}, "hr", "", 500, ""); err != nil {
		t.Fatal(err)
	}
	es, _, _ := sc.svc.ListAudit(ctx, AuditFilter{Action: "records.read", Newest: true, Limit: 1})
	if len(es[0].RecordIDs) != 0 || !strings.Contains(es[0].Reason, "records, sha256 of their ids") {
		t.Fatalf("large page entry: %+v", es[0])
	}
	agentPages, _, _ := sc.svc.ListAudit(ctx, AuditFilter{Action: "records.read", Actor: sc.agent.ID})
	if last := agentPages[len(agentPages)-1]; last.Purpose != "payroll" || len(last.RecordIDs) != 1 || !slices.Equal(last.Fields, []string{"dept"}) {
		t.Fatalf("agent page entry: %+v", last)
	}
	// A page whose entry cannot be written returns nothing.
	fault := errors.New("injected")
	sc.svc.writer.fault.Store(&fault)
	if page, _, err := sc.svc.ListRecords(ctx, RequestMeta{Actor: sc.writer}, "hr", "", 10, ""); page != nil || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("page with the audit log down: %d records, %v", len(page), err)
	}
	sc.svc.writer.fault.Store(nil)
}

// TestReadRechecksGrants: an agent's read decided on a grant that another
// node revoked (here, in the store behind this node's memory) is refused
// when its entry is written; asked again, the read sees the grants as
// they are.
func TestReadRechecksGrants(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.mustCollection(peopleSchema)
	recs, err := e.svc.CreateRecords(ctx, RequestMeta{}, "people", []map[string]json.RawMessage{fields("name", "n", "note", "x")})
	if err != nil {
		t.Fatal(err)
	}
	agent := e.agentWithGrant(GrantRequest{Collection: "people", Fields: []string{"note"}, Purpose: "support"})
	as := RequestMeta{Actor: agent}
	if _, err := e.svc.GetRecord(ctx, as, "people", recs[0].ID, "support"); err != nil {
		t.Fatal(err)
	}
	g := e.svc.agentGrants(agent.ID)[0]
	now := e.svc.now()
	g.RevokedAt = &now
	b, _ := json.Marshal(g)
	if err := e.store.Update(ctx, false, func(txn storage.Txn) error { return txn.Set(grantKey(g.ID), b) }); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.GetRecord(ctx, as, "people", recs[0].ID, "support"); !errors.Is(err, errGrantChanged) {
		t.Fatalf("a read under a grant revoked behind the cache: %v", err)
	}
}
