package vault

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentvault/agentvault/internal/pgtest"
	"github.com/agentvault/agentvault/internal/vaulttest"
	"github.com/agentvault/agentvault/keys"
	"github.com/agentvault/agentvault/storage"
	"github.com/agentvault/agentvault/storage/badgerstore"
	"github.com/agentvault/agentvault/storage/pgstore"
	"github.com/agentvault/agentvault/tokenizer"
)

// env is one vault over a data directory (and, on PostgreSQL, a database
// of its own), reopenable to simulate a restart. The store is Badger,
// unless AGENTVAULT_TEST_STORE=postgres: scripts/test.sh runs the package
// both ways.
type env struct {
	t      *testing.T
	dir    string
	store  storage.Store
	bstore *badgerstore.Store // the same store when it is Badger, else nil
	pgURL  string
	svc    *Service
	reg    *prometheus.Registry
	clock  *clock
	// tune, when set, adjusts the service's configuration at every open.
	tune func(*Config)
}

// clock is a test clock that only moves when told.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newEnv(t *testing.T) *env {
	e := &env{t: t, dir: t.TempDir(), clock: &clock{t: time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)}}
	e.open()
	t.Cleanup(e.close)
	return e
}

// close stops the service and closes the database (idempotent).
func (e *env) close() {
	e.svc.Close()
	e.store.Close()
}

func (e *env) open() {
	e.t.Helper()
	kek, err := keys.OpenLocalKEK(filepath.Join(e.dir, "dev-kek.json"))
	if err != nil {
		e.t.Fatal(err)
	}
	e.reg = prometheus.NewRegistry()
	e.openStore()
	now := time.Now
	if e.clock != nil {
		now = e.clock.now
	}
	cfg := Config{Store: e.store, Keys: keys.NewManager(kek), Registry: e.reg, Now: now}
	if e.tune != nil {
		e.tune(&cfg)
	}
	e.svc, err = New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
}

// openStore opens the env's store: its Badger directory, or its
// PostgreSQL database (made on first use).
func (e *env) openStore() {
	e.t.Helper()
	var err error
	if onPostgres() {
		if e.pgURL == "" {
			e.pgURL = pgtest.Database(e.t)
		}
		e.store, err = pgstore.Open(context.Background(), e.pgURL, pgstore.Options{})
	} else {
		e.bstore, err = badgerstore.Open(filepath.Join(e.dir, "db"), badgerstore.Options{Registry: e.reg})
		e.store = e.bstore
	}
	if err != nil {
		e.t.Fatal(err)
	}
}

// onPostgres reports whether this run's stores are PostgreSQL.
func onPostgres() bool { return os.Getenv("AGENTVAULT_TEST_STORE") == "postgres" }

// badger returns the Badger store, for a test about Badger itself; the
// PostgreSQL run leaves such tests out by name (scripts/test.sh).
func (e *env) badger() *badgerstore.Store {
	e.t.Helper()
	if e.bstore == nil {
		e.t.Fatal("this test is about the Badger store; the PostgreSQL run must leave it out (scripts/test.sh)")
	}
	return e.bstore
}

func (e *env) restart() {
	e.t.Helper()
	e.svc.Close()
	if err := e.store.Close(); err != nil {
		e.t.Fatal(err)
	}
	e.open()
}

func num(f float64) *float64 { return &f }

var peopleSchema = Collection{Name: "people", Fields: []Field{
	{Name: "name", Type: TypeString},
	{Name: "age", Type: TypeNumber},
	{Name: "active", Type: TypeBoolean},
	{Name: "note", Type: TypeString, Sensitive: true},
	{Name: "salary", Type: TypeNumber, Sensitive: true, Token: tokenizer.KindDeterministic, ApprovalAbove: num(100000)},
	{Name: "vip", Type: TypeBoolean, Sensitive: true},
	{Name: "card", Type: TypeString, Sensitive: true, Token: tokenizer.KindFormatPreserving, Format: tokenizer.FormatCard},
	{Name: "ssn", Type: TypeString, Sensitive: true, Token: tokenizer.KindFormatPreserving, Format: tokenizer.FormatSSN},
	{Name: "email", Type: TypeString, Sensitive: true, Token: tokenizer.KindFormatPreserving, Format: tokenizer.FormatEmail},
	{Name: "pin", Type: TypeString, Sensitive: true, Token: tokenizer.KindFormatPreserving, Format: tokenizer.FormatDigits},
}}

func (e *env) mustCollection(c Collection) {
	e.t.Helper()
	if _, err := e.svc.CreateCollection(context.Background(), RequestMeta{}, c); err != nil {
		e.t.Fatal(err)
	}
}

func fields(kv ...any) map[string]json.RawMessage {
	m := map[string]json.RawMessage{}
	for i := 0; i < len(kv); i += 2 {
		b, _ := json.Marshal(kv[i+1])
		m[kv[i].(string)] = b
	}
	return m
}

func tokenOf(t *testing.T, r Record, field string) string {
	t.Helper()
	var s string
	if err := json.Unmarshal(r.Fields[field], &s); err != nil {
		t.Fatalf("field %s is not a token: %s", field, r.Fields[field])
	}
	return s
}

func (e *env) reveal(token string) string {
	e.t.Helper()
	_, v, err := e.svc.lookupValue(token)
	if err != nil {
		e.t.Fatalf("lookup %s: %v", token, err)
	}
	return string(v)
}

// count returns how many keys start with prefix.
func (e *env) count(prefix string) int {
	n := 0
	e.store.View(func(txn storage.Txn) error {
		it := txn.NewIterator(storage.IterOptions{Prefix: []byte(prefix)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	return n
}

func TestRecordsRoundTrip(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.mustCollection(peopleSchema)
	ctx := context.Background()
	in := fields("name", "Jane", "age", 41, "active", true, "note", "likes tea", "salary", 120000.5,
		"vip", false, "card", "4111 1111 1111 1234", "ssn", "123-45-6789", "email", "jane@example.com", "pin", "0042")
	recs, err := e.svc.CreateRecords(ctx, RequestMeta{}, "people", []map[string]json.RawMessage{in})
	if err != nil {
		t.Fatal(err)
	}
	r := recs[0]
	// Non-sensitive fields come back as they went in; sensitive ones as tokens.
	for _, f := range []string{"name", "age", "active"} {
		if string(r.Fields[f]) != string(in[f]) {
			t.Errorf("field %s = %s, want %s", f, r.Fields[f], in[f])
		}
	}
	want := map[string]string{
		"note": `"likes tea"`, "salary": `120000.5`, "vip": `false`, "card": `"4111 1111 1111 1234"`,
		"ssn": `"123-45-6789"`, "email": `"jane@example.com"`, "pin": `"0042"`,
	}
	for f, v := range want {
		tok := tokenOf(t, r, f)
		if strings.Contains(tok, strings.Trim(v, `"`)) && f != "card" {
			t.Errorf("token for %s contains the value: %s", f, tok)
		}
		if got := e.reveal(tok); got != v {
			t.Errorf("reveal %s = %s, want %s", f, got, v)
		}
	}
	got, err := e.svc.GetRecord(ctx, RequestMeta{}, "people", r.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	for f := range in {
		if string(got.Fields[f]) != string(r.Fields[f]) {
			t.Errorf("GetRecord field %s = %s, want %s", f, got.Fields[f], r.Fields[f])
		}
	}

	// Delete: the record and its tokens are gone, and a deleted token is
	// indistinguishable from one that never existed.
	if err := e.svc.DeleteRecord(ctx, RequestMeta{}, "people", r.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.GetRecord(ctx, RequestMeta{}, "people", r.ID, ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetRecord after delete = %v", err)
	}
	for f := range want {
		_, _, err := e.svc.lookupValue(tokenOf(t, r, f))
		if err != errTokenNotFound {
			t.Errorf("token of deleted %s: %v, want errTokenNotFound", f, err)
		}
	}
	if _, _, err := e.svc.lookupValue(tokenizer.Random()); err != errTokenNotFound {
		t.Errorf("never-issued token: %v", err)
	}
	if n := e.count("x/") + e.count("t/") + e.count("r/"); n != 0 {
		t.Errorf("%d keys left after delete", n)
	}
}

func TestDeterministicTokens(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.mustCollection(peopleSchema)
	e.mustCollection(Collection{Name: "other", Fields: []Field{{Name: "salary", Type: TypeNumber, Sensitive: true, Token: tokenizer.KindDeterministic}}})
	ctx := context.Background()
	recs, err := e.svc.CreateRecords(ctx, RequestMeta{}, "people", []map[string]json.RawMessage{
		{"salary": json.RawMessage(`100`)}, {"salary": json.RawMessage(`100.0`)}, {"salary": json.RawMessage(`101`)},
	})
	if err != nil {
		t.Fatal(err)
	}
	a, b, c := tokenOf(t, recs[0], "salary"), tokenOf(t, recs[1], "salary"), tokenOf(t, recs[2], "salary")
	if a != b {
		t.Errorf("100 and 100.0 got different tokens %s, %s", a, b)
	}
	if a == c {
		t.Error("100 and 101 got the same token")
	}
	o, err := e.svc.CreateRecords(ctx, RequestMeta{}, "other", []map[string]json.RawMessage{{"salary": json.RawMessage(`100`)}})
	if err != nil {
		t.Fatal(err)
	}
	if tokenOf(t, o[0], "salary") == a {
		t.Error("two collections share a deterministic token: their keys are not separate")
	}
	// Deleting one record keeps the shared token resolving for the other.
	if err := e.svc.DeleteRecord(ctx, RequestMeta{}, "people", recs[0].ID); err != nil {
		t.Fatal(err)
	}
	ref, v, err := e.svc.lookupValue(a)
	if err != nil || ref.RecordID != recs[1].ID || string(v) != "100.0" {
		t.Fatalf("shared token after deleting one record: %+v %s %v", ref, v, err)
	}
	// The same value after a restart still gets the same token.
	e.restart()
	again, err := e.svc.CreateRecords(ctx, RequestMeta{}, "people", []map[string]json.RawMessage{{"salary": json.RawMessage(`100`)}})
	if err != nil {
		t.Fatal(err)
	}
	if tokenOf(t, again[0], "salary") != a {
		t.Error("deterministic token changed across a restart")
	}
}

func TestBadBatchStoresNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.mustCollection(peopleSchema)
	good := fields("name", "ok", "note", "fine")
	tests := []struct {
		name       string
		collection string
		bad        map[string]json.RawMessage
		kind       error
		code       string
		mentions   string
	}{
		{"unknown field", "people", fields("nickname", "x"), ErrInvalid, "unknown_field", `"nickname"`},
		{"string for number", "people", fields("age", "forty"), ErrInvalid, "wrong_type", `"age"`},
		{"number for string", "people", fields("note", 5), ErrInvalid, "wrong_type", `"note"`},
		{"string for boolean", "people", fields("vip", "yes"), ErrInvalid, "wrong_type", `"vip"`},
		{"null value", "people", map[string]json.RawMessage{"note": json.RawMessage("null")}, ErrInvalid, "wrong_type", `"note"`},
		{"object value", "people", map[string]json.RawMessage{"note": json.RawMessage(`{"a":1}`)}, ErrInvalid, "wrong_type", `"note"`},
		{"bad card", "people", fields("card", "1234"), ErrInvalid, "invalid_value", `"card"`},
		{"bad ssn", "people", fields("ssn", "12-34"), ErrInvalid, "invalid_value", `"ssn"`},
		{"empty record", "people", map[string]json.RawMessage{}, ErrInvalid, "empty_record", "record 2"},
		{"too long", "people", fields("note", strings.Repeat("x", MaxValueBytes+1)), ErrInvalid, "wrong_type", `"note"`},
		{"missing collection", "nope", good, ErrNotFound, "collection_not_found", `"nope"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			batch := []map[string]json.RawMessage{good, good, tt.bad, good}
			_, err := e.svc.CreateRecords(context.Background(), RequestMeta{}, tt.collection, batch)
			var de *Error
			if !errors.As(err, &de) || !errors.Is(err, tt.kind) || de.Code != tt.code {
				t.Fatalf("err = %v, want %v with code %s", err, tt.kind, tt.code)
			}
			if !strings.Contains(de.Message, tt.mentions) {
				t.Errorf("message %q does not mention %s", de.Message, tt.mentions)
			}
			if strings.Contains(de.Message, "forty") || strings.Contains(de.Message, "1234") {
				t.Errorf("message %q contains the value", de.Message)
			}
			if n := e.count("r/") + e.count("x/") + e.count("t/"); n != 0 {
				t.Fatalf("a rejected batch stored %d keys", n)
			}
		})
	}
	if _, err := e.svc.CreateRecords(context.Background(), RequestMeta{}, "people", nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("empty batch: %v", err)
	}
	big := make([]map[string]json.RawMessage, e.svc.cfg.MaxBatchRecords+1)
	for i := range big {
		big[i] = good
	}
	if _, err := e.svc.CreateRecords(context.Background(), RequestMeta{}, "people", big); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversized batch: %v", err)
	}
	if n := e.count("r/"); n != 0 {
		t.Fatalf("rejected batches stored %d records", n)
	}
}

// TestCreateInOrder: a create answers each record's fields in the order
// given, sensitive ones as their tokens, one time for the batch; a name
// given twice rejects the batch and stores nothing; the stored record
// reads back as the answer had it.
func TestCreateInOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.mustCollection(peopleSchema)
	ctx := context.Background()
	fv := func(name, raw string) FieldValue { return FieldValue{Name: name, Value: json.RawMessage(raw)} }
	in := []NewRecord{
		{fv("note", `"first"`), fv("name", `"Ann"`), fv("age", `41`)},
		{fv("age", `7`), fv("vip", `true`), fv("salary", `1e3`)},
	}
	got, err := e.svc.CreateRecordsInOrder(ctx, RequestMeta{}, "people", in)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range got {
		if r.CreatedAt != got[0].CreatedAt || r.ID == "" {
			t.Errorf("record %d: id %q, created %v (first %v)", i, r.ID, r.CreatedAt, got[0].CreatedAt)
		}
		for j, f := range r.Fields {
			fd, _ := peopleSchema.Field(f.Name)
			var tok string
			switch {
			case f.Name != in[i][j].Name:
				t.Errorf("record %d field %d: %q, given %q", i, j, f.Name, in[i][j].Name)
			case !fd.Sensitive && string(f.Value) != string(in[i][j].Value):
				t.Errorf("record %d: %s = %s, given %s", i, f.Name, f.Value, in[i][j].Value)
			case fd.Sensitive && (json.Unmarshal(f.Value, &tok) != nil || tok == "" || strings.Contains(string(in[i][j].Value), tok)):
				t.Errorf("record %d: %s answered %s, not a token", i, f.Name, f.Value)
			}
		}
		stored, err := e.svc.GetRecord(ctx, RequestMeta{}, "people", r.ID, "")
		if err != nil {
			t.Fatal(err)
		}
		if want := r.Record(); !reflect.DeepEqual(stored.Fields, want.Fields) || !stored.CreatedAt.Equal(want.CreatedAt) {
			t.Errorf("record %d reads back %v, created as %v", i, stored, want)
		}
	}
	_, err = e.svc.CreateRecordsInOrder(ctx, RequestMeta{}, "people", []NewRecord{{fv("name", `"ok"`)}, {fv("name", `"a"`), fv("note", `"b"`), fv("name", `"c"`)}})
	wantErr(t, err, ErrInvalid, "duplicate_field")
	if n := e.count("r/"); n != len(got) {
		t.Errorf("%d records stored, want the %d created before the rejected batch", n, len(got))
	}
}

func TestCollectionValidation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tests := []struct {
		name string
		c    Collection
	}{
		{"bad name", Collection{Name: "Bad Name", Fields: []Field{{Name: "a", Type: TypeString}}}},
		{"no fields", Collection{Name: "c1"}},
		{"bad type", Collection{Name: "c2", Fields: []Field{{Name: "a", Type: "date"}}}},
		{"duplicate field", Collection{Name: "c3", Fields: []Field{{Name: "a", Type: TypeString}, {Name: "a", Type: TypeNumber}}}},
		{"token on plain field", Collection{Name: "c4", Fields: []Field{{Name: "a", Type: TypeString, Token: tokenizer.KindRandom}}}},
		{"fpe without format", Collection{Name: "c5", Fields: []Field{{Name: "a", Type: TypeString, Sensitive: true, Token: tokenizer.KindFormatPreserving}}}},
		{"fpe on number", Collection{Name: "c6", Fields: []Field{{Name: "a", Type: TypeNumber, Sensitive: true, Token: tokenizer.KindFormatPreserving, Format: tokenizer.FormatDigits}}}},
		{"unknown token", Collection{Name: "c7", Fields: []Field{{Name: "a", Type: TypeString, Sensitive: true, Token: "hash"}}}},
		{"unknown mask", Collection{Name: "c8", Fields: []Field{{Name: "a", Type: TypeString, Sensitive: true, Mask: "first2"}}}},
		{"approval_above on string", Collection{Name: "c9", Fields: []Field{{Name: "a", Type: TypeString, Sensitive: true, ApprovalAbove: num(1)}}}},
		{"bad approval", Collection{Name: "c10", Fields: []Field{{Name: "a", Type: TypeString, Sensitive: true, Approval: "sometimes"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := e.svc.CreateCollection(context.Background(), RequestMeta{}, tt.c); !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
		})
	}
	e.mustCollection(peopleSchema)
	if _, err := e.svc.CreateCollection(context.Background(), RequestMeta{}, peopleSchema); !errors.Is(err, ErrConflict) {
		t.Fatalf("duplicate collection: %v, want ErrConflict", err)
	}
	if n := e.count("c/"); n != 1 {
		t.Fatalf("%d collections stored, want 1", n)
	}
}

// TestRestartAndNoPlaintextOnDisk stores values of every token kind, closes
// the database, checks that no file in the data directory (on PostgreSQL,
// the cluster's: tables, indexes and write-ahead log) holds any of them
// (while the non-sensitive marker is found, so the scan works), then
// reopens and reads everything back.
func TestRestartAndNoPlaintextOnDisk(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.mustCollection(peopleSchema)
	ctx := context.Background()
	secrets := map[string]string{
		"note": "SECRET-NOTE-7f3a9c", "email": "very.secret.person@example.org", "card": "4929 3817 2265 8812",
		"ssn": "078-05-1120", "pin": "93817265",
	}
	in := fields("name", "PUBLIC-MARKER-5521", "salary", 987654.321)
	for f, v := range secrets {
		in[f], _ = json.Marshal(v)
	}
	recs, err := e.svc.CreateRecords(ctx, RequestMeta{}, "people", []map[string]json.RawMessage{in})
	if err != nil {
		t.Fatal(err)
	}
	e.restart() // flush everything through a close
	e.close()
	needles := map[string]bool{"987654.321": false, "PUBLIC-MARKER-5521": true}
	for f, v := range secrets {
		needles[v] = false
		if f == "card" || f == "ssn" {
			needles[strings.NewReplacer(" ", "", "-", "").Replace(v)] = false
		}
	}
	found := map[string]bool{}
	dir := e.dir
	if onPostgres() {
		if dir = os.Getenv("AGENTVAULT_POSTGRES_DATA"); dir == "" {
			vaulttest.Missing(t, "AGENTVAULT_REQUIRE_POSTGRES", "AGENTVAULT_POSTGRES_DATA is not set: the PostgreSQL cluster's directory is unknown; scripts/test.sh sets it")
		}
	}
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // a live server's temporary file, gone since the listing
		}
		if err != nil || d.IsDir() || d.Name() == "dev-kek.json" {
			return err
		}
		b, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			t.Fatal(err)
		}
		for n := range needles {
			if bytes.Contains(b, []byte(n)) {
				found[n] = true
			}
		}
		return nil
	})
	for n, allowed := range needles {
		if found[n] != allowed {
			t.Errorf("%q found on disk: %v, want %v", n, found[n], allowed)
		}
	}
	e.open()
	got, err := e.svc.GetRecord(ctx, RequestMeta{}, "people", recs[0].ID, "")
	if err != nil {
		t.Fatal(err)
	}
	for f, v := range secrets {
		if tokenOf(t, *got, f) != tokenOf(t, recs[0], f) {
			t.Errorf("token of %s changed across restart", f)
		}
		if r := e.reveal(tokenOf(t, *got, f)); r != `"`+v+`"` {
			t.Errorf("after restart %s reveals %s", f, r)
		}
	}
}

// TestCiphertextBoundToPlace copies one value's ciphertext over another's
// in the token index: the associated data (collection, record, field) no
// longer matches and decryption fails instead of revealing the moved value.
func TestCiphertextBoundToPlace(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.mustCollection(peopleSchema)
	ctx := context.Background()
	recs, err := e.svc.CreateRecords(ctx, RequestMeta{}, "people", []map[string]json.RawMessage{
		fields("note", "alice's secret", "salary", 1), fields("note", "bob's note", "salary", 2),
	})
	if err != nil {
		t.Fatal(err)
	}
	cipherOf := func(r Record, field string) []byte {
		var ct []byte
		e.store.View(func(txn storage.Txn) error {
			refs, err := resolveToken(txn, nil, tokenOf(t, r, field))
			if err != nil || len(refs) != 1 {
				t.Fatalf("resolve: %v %v", refs, err)
			}
			ct = refs[0].cipher
			return nil
		})
		return ct
	}
	aliceNote := cipherOf(recs[0], "note")
	for _, tc := range []struct{ name, field string }{{"other record", "note"}, {"other field", "salary"}} {
		tok := tokenOf(t, recs[1], tc.field)
		key := tokenIndexKey(tok, "people", recs[1].ID, tc.field)
		val := tokenIndexValue(tok, "people", recs[1].ID, tc.field, aliceNote)
		if err := e.store.Update(ctx, false, func(txn storage.Txn) error { return txn.Set(key, val) }); err != nil {
			t.Fatal(err)
		}
		_, v, err := e.svc.lookupValue(tokenOf(t, recs[1], tc.field))
		if !errors.Is(err, keys.ErrDecrypt) || v != nil {
			t.Errorf("%s: moved ciphertext gave %q, %v; want ErrDecrypt", tc.name, v, err)
		}
	}
	// The original still opens where it belongs.
	if got := e.reveal(tokenOf(t, recs[0], "note")); got != `"alice's secret"` {
		t.Errorf("original = %s", got)
	}
}

// TestFormatTokensUniqueUnderConcurrency races writers over a tiny token
// space (two digits: 100 tokens) and checks that no token is ever shared,
// and that the space running out is a clean conflict, not a shared token.
func TestFormatTokensUniqueUnderConcurrency(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.mustCollection(Collection{Name: "codes", Fields: []Field{{Name: "code", Type: TypeString, Sensitive: true, Token: tokenizer.KindFormatPreserving, Format: tokenizer.FormatDigits}}})
	ctx := context.Background()
	var mu sync.Mutex
	tokens := map[string]int{}
	exhausted := 0
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 14 {
				recs, err := e.svc.CreateRecords(ctx, RequestMeta{}, "codes", []map[string]json.RawMessage{fields("code", fmt.Sprintf("%02d", (w*14+i)%100))})
				mu.Lock()
				if err != nil {
					if !errors.Is(err, ErrConflict) {
						t.Errorf("unexpected error: %v", err)
					}
					exhausted++
				} else {
					tokens[tokenOf(t, recs[0], "code")]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for tok, n := range tokens {
		if n != 1 || len(tok) != 2 {
			t.Errorf("token %q issued %d times", tok, n)
		}
	}
	if len(tokens)+exhausted != 112 || len(tokens) > 100 {
		t.Errorf("%d tokens and %d conflicts for 112 writes", len(tokens), exhausted)
	}
	if len(tokens) < 60 {
		t.Errorf("only %d of 100 tokens used before giving up", len(tokens))
	}
	if n := e.count("r/"); n != len(tokens) {
		t.Errorf("%d records stored, %d acknowledged", n, len(tokens))
	}
}

func TestPrincipals(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	boot, err := e.svc.EnsureBootstrapAdmin(ctx, "")
	if err != nil || !strings.HasPrefix(boot, apiTokenPrefix) {
		t.Fatalf("first start generates a token: %q, %v", boot, err)
	}
	if again, _ := e.svc.EnsureBootstrapAdmin(ctx, ""); again != "" {
		t.Fatal("a second start generated another admin token")
	}
	admin, err := e.svc.Authenticate(boot)
	if err != nil || !admin.Has(RoleAdmin) {
		t.Fatalf("bootstrap token: %v", err)
	}
	p, tok, err := e.svc.CreatePrincipal(ctx, RequestMeta{Actor: admin}, "agent-1", []Role{RoleAgent})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := e.svc.Authenticate(tok); err != nil || got.ID != p.ID {
		t.Fatalf("authenticate new principal: %v", err)
	}
	for _, bad := range []string{"", tok + "x", tok[:len(tok)-1], strings.ToLower(tok), "avt_" + strings.Repeat("A", 52)} {
		if _, err := e.svc.Authenticate(bad); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("Authenticate(%q) = %v", bad, err)
		}
	}
	for _, tc := range []struct {
		name  string
		roles []Role
	}{{"", []Role{RoleAgent}}, {"x", nil}, {"x", []Role{"root"}}, {"x", []Role{RoleAgent, RoleAgent}}} {
		if _, _, err := e.svc.CreatePrincipal(ctx, RequestMeta{Actor: admin}, tc.name, tc.roles); !errors.Is(err, ErrInvalid) {
			t.Errorf("CreatePrincipal(%q, %v) = %v", tc.name, tc.roles, err)
		}
	}
	if err := e.svc.RevokePrincipal(ctx, RequestMeta{Actor: admin}, admin.ID); !errors.Is(err, ErrConflict) {
		t.Errorf("self-revoke: %v", err)
	}
	if err := e.svc.RevokePrincipal(ctx, RequestMeta{Actor: admin}, p.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Authenticate(tok); !errors.Is(err, ErrUnauthenticated) {
		t.Fatal("revoked token still works")
	}
	// Across a restart: revocation holds; the env token replaces the
	// generated bootstrap token.
	e.restart()
	if _, err := e.svc.Authenticate(tok); !errors.Is(err, ErrUnauthenticated) {
		t.Fatal("revoked token works after restart")
	}
	if _, err := e.svc.Authenticate(boot); err != nil {
		t.Fatal("bootstrap token lost across restart")
	}
	if _, err := e.svc.EnsureBootstrapAdmin(ctx, "env-admin-token-0123456789"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Authenticate(boot); err == nil {
		t.Fatal("old bootstrap token still works after AGENTVAULT_ADMIN_TOKEN replaced it")
	}
	if _, err := e.svc.Authenticate("env-admin-token-0123456789"); err != nil {
		t.Fatal(err)
	}
	// Tokens are stored only as hashes.
	e.close()
	filepath.WalkDir(e.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := os.ReadFile(path)
		for _, secret := range []string{tok, boot, "env-admin-token-0123456789"} {
			if bytes.Contains(b, []byte(secret)) {
				t.Errorf("API token found in %s", path)
			}
		}
		return nil
	})
	e.open()
}

// TestGroupCommit checks that concurrent durable writes share fsyncs.
// Every write-ahead log fdatasync is made slow (an injected slow disk,
// 40ms), so creates that arrive while one runs must go into the single
// writer's next transaction and be made durable together: without
// grouping, 256 creates would cost 256 fsyncs.
func TestGroupCommit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.mustCollection(hrSchema)
	slow := func() { time.Sleep(40 * time.Millisecond) }
	// histogram reads a histogram's count and sum.
	histogram := func(name string) (uint64, float64) {
		mfs, err := e.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == name {
				h := mf.GetMetric()[0].GetHistogram()
				return h.GetSampleCount(), h.GetSampleSum()
			}
		}
		t.Fatalf("no %s metric", name)
		return 0, 0
	}
	syncs := func() uint64 { n, _ := histogram("agentvault_store_sync_seconds"); return n }
	e.badger().SetSyncHooks(slow, nil)
	defer e.badger().SetSyncHooks(nil, nil)
	before := syncs()
	batches0, requests0 := histogram("agentvault_writer_batch_requests")
	const writers = 256
	var wg sync.WaitGroup
	start := make(chan struct{})
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if _, err := e.svc.CreateRecords(context.Background(), RequestMeta{}, "hr", []map[string]json.RawMessage{fields("ssn", fmt.Sprintf("123-45-%04d", w))}); err != nil {
				t.Error(err)
			}
		}()
	}
	close(start)
	wg.Wait()
	n := syncs() - before
	if n == 0 || n > writers/4 {
		t.Errorf("%d fsyncs for %d concurrent creates: not grouped", n, writers)
	}
	// The writer's own count: every create in some transaction, each
	// transaction with its fdatasync.
	batches, requests := histogram("agentvault_writer_batch_requests")
	if requests-requests0 != writers || batches-batches0 == 0 || batches-batches0 > n {
		t.Errorf("writer batches: %d requests in %d transactions, want %d in %d", uint64(requests-requests0), batches-batches0, writers, n)
	}
	if got := e.count("a/"); got < writers {
		t.Errorf("%d audit entries, want at least %d", got, writers)
	}
	t.Logf("%d creates, %d fsyncs", writers, n)
}

// TestRevokedBootstrapAdminStaysRevoked is the review's reproduction: the
// bootstrap admin revoked, the next start with the same
// AGENTVAULT_ADMIN_TOKEN must not bring it back.
func TestRevokedBootstrapAdminStaysRevoked(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	const envToken = "env-admin-token-0123456789"
	if _, err := e.svc.EnsureBootstrapAdmin(ctx, envToken); err != nil {
		t.Fatal(err)
	}
	boot, _ := e.svc.Authenticate(envToken)
	other, otherTok, err := e.svc.CreatePrincipal(ctx, RequestMeta{Actor: boot}, "second-admin", []Role{RoleAdmin})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.svc.RevokePrincipal(ctx, RequestMeta{Actor: other}, boot.ID); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		e.restart()
		_, err := e.svc.EnsureBootstrapAdmin(ctx, envToken)
		if err == nil || !strings.Contains(err.Error(), "revoked") || strings.Contains(err.Error(), envToken) {
			t.Fatalf("start with a revoked admin's token: %v", err)
		}
		if _, err := e.svc.Authenticate(envToken); !errors.Is(err, ErrUnauthenticated) {
			t.Fatal("the revoked bootstrap token authenticates again")
		}
	}
	// Another principal's token is refused too; a new token makes a new
	// bootstrap admin, and no two principals ever share a hash.
	if _, err := e.svc.EnsureBootstrapAdmin(ctx, otherTok); err == nil {
		t.Fatal("AGENTVAULT_ADMIN_TOKEN set to another principal's token was taken")
	}
	if _, err := e.svc.EnsureBootstrapAdmin(ctx, "a-brand-new-admin-token-42"); err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	for _, p := range e.svc.ListPrincipals(ctx) {
		e.svc.pmu.RLock()
		h := string(e.svc.byID[p.ID].TokenHash)
		e.svc.pmu.RUnlock()
		if id, dup := seen[h]; dup {
			t.Fatalf("principals %s and %s share a token hash", id, p.ID)
		}
		seen[h] = p.ID
	}
}
