package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
)

// TestUpdateRecord: changed fields atomically, tokens replaced or
// following the value, old tokens dead, indexes and key counters exact.
func TestUpdateRecord(t *testing.T) {
	t.Parallel()
	e, recs := staffEnv(t, 6)
	ctx := context.Background()
	r := recs[0]
	agent := e.agentWithGrant(GrantRequest{Collection: "staff", Fields: []string{"email", "note", "card"}, Purpose: "p"})
	reveal := func(tok string) DetokenizeResult {
		res, err := e.svc.Detokenize(ctx, RequestMeta{Actor: agent}, DetokenizeRequest{Tokens: []string{tok}, Purpose: "p"})
		if err != nil {
			t.Fatal(err)
		}
		return res[0]
	}
	old := map[string]string{"email": tokenOf(t, r, "email"), "note": tokenOf(t, r, "note"), "card": tokenOf(t, r, "card")}
	got, err := e.svc.UpdateRecord(ctx, RequestMeta{}, "staff", r.ID, fields(
		"dept", "legal", "email", "p1@example.com", "note", "moved to legal", "card", "4111 1111 1111 9999", "title", nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := got.Fields["title"]; ok || string(got.Fields["dept"]) != `"legal"` {
		t.Fatalf("updated record: %v", got.Fields)
	}
	// Random and format-preserving tokens are new; the old ones are dead.
	for _, f := range []string{"note", "card"} {
		if tokenOf(t, *got, f) == old[f] {
			t.Fatalf("%s token not replaced", f)
		}
		if res := reveal(old[f]); res.Status != StatusNotFound {
			t.Fatalf("old %s token: %+v", f, res)
		}
	}
	if res := reveal(tokenOf(t, *got, "note")); res.Status != StatusOK || string(res.Value) != `"moved to legal"` {
		t.Fatalf("new note: %+v", res)
	}
	// The deterministic token follows the value: the same as record 1's.
	if tokenOf(t, *got, "email") != tokenOf(t, recs[1], "email") {
		t.Fatal("deterministic token does not follow the value")
	}
	// Indexes: found under the new value, not the old.
	if found, _ := search(t, e.svc, RequestMeta{}, SearchRequest{Where: where("dept", "legal")}); len(found) != 1 || found[0].ID != r.ID {
		t.Fatalf("search new dept: %+v", found)
	}
	if found, _ := search(t, e.svc, RequestMeta{}, SearchRequest{Where: where("dept", "eng")}); slices.ContainsFunc(found, func(x Record) bool { return x.ID == r.ID }) {
		t.Fatal("found under the old dept")
	}
	e.countsMatch()
	es, _, _ := e.svc.ListAudit(ctx, AuditFilter{Action: "records.update"})
	if len(es) != 1 || !slices.Equal(es[0].Fields, []string{"card", "dept", "email", "note", "title"}) {
		t.Fatalf("update entry: %+v", es)
	}
	// Refusals change nothing.
	for _, bad := range []struct {
		in   map[string]json.RawMessage
		kind error
		code string
	}{
		{nil, ErrInvalid, "empty_update"},
		{fields("nope", 1), ErrInvalid, "unknown_field"},
		{fields("level", "x"), ErrInvalid, "wrong_type"},
		{fields("card", "not a card"), ErrInvalid, "invalid_value"},
	} {
		_, err := e.svc.UpdateRecord(ctx, RequestMeta{}, "staff", r.ID, bad.in)
		wantErr(t, err, bad.kind, bad.code)
	}
	_, err = e.svc.UpdateRecord(ctx, RequestMeta{}, "staff", "01a214d6-21ea-7533-a886-05413d015e67", fields("dept", "x"))
	wantErr(t, err, ErrNotFound, "record_not_found")
	all := map[string]json.RawMessage{}
	for _, f := range staffSchema.Fields {
		all[f.Name] = json.RawMessage("null")
	}
	_, err = e.svc.UpdateRecord(ctx, RequestMeta{}, "staff", r.ID, all)
	wantErr(t, err, ErrInvalid, "empty_record")
	e.countsMatch()
}

// TestUpdatesUnderConcurrency: concurrent updates and deletes keep the
// key counters, token index and plain index exact.
func TestUpdatesUnderConcurrency(t *testing.T) {
	t.Parallel()
	e, recs := staffEnv(t, 40)
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 40 {
				r := recs[(i*7+w)%len(recs)]
				if w == 3 && i%5 == 0 {
					e.svc.DeleteRecord(ctx, RequestMeta{}, "staff", r.ID)
					continue
				}
				_, err := e.svc.UpdateRecord(ctx, RequestMeta{}, "staff", r.ID, fields("dept", fmt.Sprint("d", i%3), "note", fmt.Sprint("n", w, i), "card", "4111 1111 1111 0000"))
				if err != nil && !errors.Is(err, ErrNotFound) {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	e.countsMatch()
	// Every stored record is found under its dept exactly once, and no
	// index key points at a record that is gone.
	seen := map[string]int{}
	for _, d := range []string{"eng", "ops", "hr", "d0", "d1", "d2"} {
		found, err := search(t, e.svc, RequestMeta{}, SearchRequest{Where: where("dept", d)})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range found {
			seen[r.ID]++
			if string(r.Fields["dept"]) != `"`+d+`"` {
				t.Fatalf("record %s found under %s has dept %s", r.ID, d, r.Fields["dept"])
			}
		}
	}
	listed := listAllStaff(t, e.svc)
	if len(listed) != len(seen) {
		t.Fatalf("%d records stored, %d found by dept", len(listed), len(seen))
	}
	for _, r := range listed {
		if seen[r.ID] != 1 {
			t.Fatalf("record %s found %d times", r.ID, seen[r.ID])
		}
	}
}

func listAllStaff(t *testing.T, svc *Service) []Record {
	t.Helper()
	recs, next, err := svc.ListRecords(context.Background(), RequestMeta{}, "staff", "", MaxPageSize, "")
	if err != nil || next != "" {
		t.Fatalf("list: %v %q", err, next)
	}
	return recs
}
