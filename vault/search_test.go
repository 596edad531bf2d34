package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/agentvault/agentvault/storage"
	"github.com/agentvault/agentvault/tokenizer"
)

var staffSchema = Collection{Name: "staff", Fields: []Field{
	{Name: "dept", Type: TypeString, Index: true},
	{Name: "title", Type: TypeString},
	{Name: "level", Type: TypeNumber, Index: true},
	{Name: "email", Type: TypeString, Sensitive: true, Token: tokenizer.KindDeterministic},
	{Name: "note", Type: TypeString, Sensitive: true},
	{Name: "card", Type: TypeString, Sensitive: true, Token: tokenizer.KindFormatPreserving, Format: tokenizer.FormatCard},
}}

// staffEnv stores n staff records, dept cycling through eng, ops, hr.
func staffEnv(t *testing.T, n int) (*env, []Record) {
	e := newEnv(t)
	e.mustCollection(staffSchema)
	var in []map[string]json.RawMessage
	for i := range n {
		in = append(in, fields("dept", []string{"eng", "ops", "hr"}[i%3], "title", "t", "level", i%5,
			"email", fmt.Sprintf("p%d@example.com", i), "note", fmt.Sprint("note ", i), "card", fmt.Sprintf("4111 1111 1111 %04d", i)))
	}
	var recs []Record
	for len(in) > 0 {
		k := min(len(in), 1000)
		r, err := e.svc.CreateRecords(context.Background(), RequestMeta{}, "staff", in[:k])
		if err != nil {
			t.Fatal(err)
		}
		recs, in = append(recs, r...), in[k:]
	}
	return e, recs
}

func search(t *testing.T, svc *Service, meta RequestMeta, req SearchRequest) ([]Record, error) {
	t.Helper()
	var all []Record
	for range 1000 {
		page, next, err := svc.SearchRecords(context.Background(), meta, "staff", req)
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		if next == "" {
			return all, nil
		}
		req.After = next
	}
	t.Fatal("search did not end")
	return nil, nil
}

func where(kv ...any) map[string]json.RawMessage { return fields(kv...) }

func TestSearchRecords(t *testing.T) {
	t.Parallel()
	e, recs := staffEnv(t, 30)
	ctx := context.Background()
	writer := RequestMeta{}
	ids := func(rs []Record) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.ID)
		}
		return out
	}
	byDept := func(dept string, level int) []string {
		var out []string
		for i, r := range recs {
			if []string{"eng", "ops", "hr"}[i%3] == dept && (level < 0 || i%5 == level) {
				out = append(out, r.ID)
			}
		}
		return out
	}
	tests := []struct {
		name  string
		where map[string]json.RawMessage
		want  []string
	}{
		{"indexed plain field", where("dept", "eng"), byDept("eng", -1)},
		{"two indexed fields", where("dept", "ops", "level", 2), byDept("ops", 2)},
		{"deterministic by value", where("email", "p7@example.com"), []string{recs[7].ID}},
		{"deterministic by token", where("email", tokenOf(t, recs[8], "email")), []string{recs[8].ID}},
		{"random by token", where("note", tokenOf(t, recs[9], "note")), []string{recs[9].ID}},
		{"format-preserving by token, with a plain condition", where("card", tokenOf(t, recs[10], "card"), "dept", "ops"), []string{recs[10].ID}},
		{"a condition that excludes", where("card", tokenOf(t, recs[10], "card"), "dept", "eng"), nil},
		{"no match", where("dept", "legal"), nil},
	}
	for _, tt := range tests {
		got, err := search(t, e.svc, writer, SearchRequest{Where: tt.where, Limit: 4})
		if err != nil || !slices.Equal(ids(got), tt.want) {
			t.Errorf("%s: %v %v, want %v", tt.name, ids(got), err, tt.want)
		}
	}
	for _, bad := range []struct {
		where map[string]json.RawMessage
		code  string
	}{
		{where("title", "t"), "field_not_indexed"},
		{where("note", "note 3"), "invalid_condition"},
		{where("nope", 1), "unknown_field"},
		{where("level", "high"), "invalid_value"},
		{nil, "empty_where"},
	} {
		_, _, err := e.svc.SearchRecords(ctx, writer, "staff", SearchRequest{Where: bad.where})
		wantErr(t, err, ErrInvalid, bad.code)
	}

	// An agent: only fields it sees; by value only under a plain grant.
	agent := e.agentWithGrant(GrantRequest{Collection: "staff", Fields: []string{"dept", "email"}, Purpose: "find"})
	as := RequestMeta{Actor: agent}
	e.svc.RevokeGrant(ctx, RequestMeta{}, e.svc.agentGrants(agent.ID)[0].ID)
	if _, err := e.svc.CreateGrant(ctx, RequestMeta{}, GrantRequest{PrincipalID: agent.ID, Collection: "staff", Fields: []string{"dept", "email"}, Purpose: "find", TTL: "1h", Reveal: RevealNone}); err != nil {
		t.Fatal(err)
	}
	_, _, err := e.svc.SearchRecords(ctx, as, "staff", SearchRequest{Where: where("email", "p7@example.com"), Purpose: "find"})
	wantErr(t, err, ErrForbidden, "value_search_forbidden")
	_, _, err = e.svc.SearchRecords(ctx, as, "staff", SearchRequest{Where: where("note", tokenOf(t, recs[9], "note")), Purpose: "find"})
	wantErr(t, err, ErrInvalid, "unknown_field")
	got, err := search(t, e.svc, as, SearchRequest{Where: where("email", tokenOf(t, recs[7], "email")), Purpose: "find"})
	if err != nil || len(got) != 1 || !slices.Equal(fieldNames(&got[0]), []string{"dept", "email"}) {
		t.Fatalf("agent search by token: %+v %v", got, err)
	}
	if _, err := e.svc.CreateGrant(ctx, RequestMeta{}, GrantRequest{PrincipalID: agent.ID, Collection: "staff", Fields: []string{"email"}, Purpose: "find", TTL: "1h", Reveal: RevealPlain}); err != nil {
		t.Fatal(err)
	}
	if got, err := search(t, e.svc, as, SearchRequest{Where: where("email", "p7@example.com"), Purpose: "find"}); err != nil || len(got) != 1 {
		t.Fatalf("agent search by value under a plain grant: %+v %v", got, err)
	}

	// The audit entry names the fields searched, never the values.
	es, _, _ := e.svc.ListAudit(ctx, AuditFilter{Action: "records.search", Newest: true, Limit: 1})
	b, _ := json.Marshal(es[0])
	if len(es[0].Tokens) != 1 || es[0].Tokens[0].Field != "email" || es[0].Tokens[0].TokenHash == "" || strings.Contains(string(b), "p7@example.com") || es[0].Purpose != "find" {
		t.Fatalf("search entry: %s", b)
	}

	// Deleting a record drops its index keys; the index stays exact.
	if err := e.svc.DeleteRecord(ctx, RequestMeta{}, "staff", recs[0].ID); err != nil {
		t.Fatal(err)
	}
	if got, _ := search(t, e.svc, writer, SearchRequest{Where: where("dept", "eng")}); slices.Contains(ids(got), recs[0].ID) || len(got) != len(byDept("eng", -1))-1 {
		t.Fatalf("after delete: %v", ids(got))
	}
	n := 0
	e.store.View(func(txn storage.Txn) error {
		it := txn.NewIterator(storage.IterOptions{Prefix: []byte("pi/staff\x00")})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	if n != 2*29 {
		t.Fatalf("%d index keys for 29 records with two indexed fields", n)
	}
	if _, _, err := e.svc.SearchRecords(ctx, writer, "staff", SearchRequest{Where: where("dept", "eng"), After: "x"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad cursor: %v", err)
	}
}

// TestIndexedSearchCostFollowsMatches: a search on an indexed plain field
// costs the same on 300 and on 6,000 records when the matches are the
// same: it does not read non-matching records (measured in allocations,
// which grow with every record read).
func TestIndexedSearchCostFollowsMatches(t *testing.T) {
	cost := func(n int) float64 {
		e, _ := staffEnv(t, n)
		if _, err := e.svc.CreateRecords(context.Background(), RequestMeta{}, "staff", []map[string]json.RawMessage{
			fields("dept", "legal"), fields("dept", "legal"), fields("dept", "legal"),
		}); err != nil {
			t.Fatal(err)
		}
		return testing.AllocsPerRun(5, func() {
			got, _, err := e.svc.SearchRecords(context.Background(), RequestMeta{}, "staff", SearchRequest{Where: where("dept", "legal")})
			if err != nil || len(got) != 3 {
				t.Fatalf("search: %d %v", len(got), err)
			}
		})
	}
	small, big := cost(300), cost(6000)
	t.Logf("allocations per search: %.0f on 300 records, %.0f on 6,000", small, big)
	if big > small*1.2+50 {
		t.Fatalf("an indexed search's cost grows with the collection: %.0f -> %.0f", small, big)
	}
}
