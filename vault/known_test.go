package vault

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/agentvault/agentvault/tokenizer"
)

var clientsSchema = Collection{Name: "clients", Fields: []Field{
	{Name: "name", Type: TypeString, Sensitive: true, Token: tokenizer.KindDeterministic, Detect: true},
	{Name: "account", Type: TypeString, Sensitive: true, Token: tokenizer.KindDeterministic, Detect: true},
	{Name: "note", Type: TypeString, Sensitive: true},
}}

// TestKnownValues: values of detect fields are found in free text by their
// normalized form, replaced by the field's own token, restored under
// grants on that field; changes and deletions follow at once, and a
// restart finds the same.
func TestKnownValues(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.mustCollection(clientsSchema)
	recs, err := e.svc.CreateRecords(ctx, RequestMeta{}, "clients", []map[string]json.RawMessage{
		fields("name", "Jane Q. Doe", "account", "ACC-0042", "note", "plays chess"),
		fields("name", "Tomás O’Brien", "account", "ACC-0077"),
	})
	if err != nil {
		t.Fatal(err)
	}
	janeTok := tokenOf(t, recs[0], "name")
	text := "Ticket: JANE  q. doe (acct acc-0042) asked about plays chess; tomás o'brien is cc'd. Not ACC-00421."
	res, err := e.svc.Redact(ctx, RequestMeta{}, RedactRequest{Text: text})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, en := range res.Entities {
		got = append(got, en.Type+"="+text[en.Start:en.End])
	}
	want := []string{"clients.name=JANE  q. doe", "clients.account=acc-0042", "clients.name=tomás o'brien"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("found %q, want %q", got, want)
	}
	if res.Entities[0].Token != textToken("CLIENTS_NAME", janeTok) {
		t.Fatalf("token %q, want the field's token %q", res.Entities[0].Token, janeTok)
	}
	for _, secret := range []string{"JANE", "acc-0042", "tomás"} {
		if strings.Contains(res.Text, secret) {
			t.Fatalf("redacted text holds %q: %s", secret, res.Text)
		}
	}
	if n := e.count("r/text\x00"); n != 0 {
		t.Fatalf("known values were stored again in the text collection: %d records", n)
	}

	// Restoring goes through grants on the field the value came from.
	agent := e.agentWithGrant(GrantRequest{Collection: "clients", Fields: []string{"name"}, Purpose: "support"})
	out, err := e.svc.RestoreText(ctx, RequestMeta{Actor: agent}, TextRestoreRequest{Text: res.Text, Purpose: "support"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.Text, "Ticket: Jane Q. Doe (acct [CLIENTS_ACCOUNT_") || !strings.Contains(out.Text, "Tomás O’Brien is cc'd") {
		t.Fatalf("restored: %s", out.Text)
	}

	// An agent finds only values it could read: the account number is
	// not detected for it, and naming the type is refused as unknown.
	res, err = e.svc.Redact(ctx, RequestMeta{Actor: agent}, RedactRequest{Text: text, Mode: "mask"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(res.Text, "Ticket: [CLIENTS_NAME] (acct acc-0042)") {
		t.Fatalf("agent's redaction: %s", res.Text)
	}
	if _, err := e.svc.Redact(ctx, RequestMeta{Actor: agent}, RedactRequest{Text: text, Types: []string{"clients.account"}}); err == nil {
		t.Fatal("an agent without a grant on clients.account named it as a type")
	}
	res, _ = e.svc.Redact(ctx, RequestMeta{}, RedactRequest{Text: text, Types: []string{"clients.account"}, Mode: "mask"})
	if res.Text != strings.Replace(text, "acc-0042", "[CLIENTS_ACCOUNT]", 1) {
		t.Fatalf("types [clients.account]: %s", res.Text)
	}

	// A changed value is found under its new form only; a deleted record's
	// values are no longer found; both hold across a restart.
	if _, err := e.svc.UpdateRecord(ctx, RequestMeta{}, "clients", recs[0].ID, fields("name", "Jane Roe")); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.DeleteRecord(ctx, RequestMeta{}, "clients", recs[1].ID); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		res, err := e.svc.Redact(ctx, RequestMeta{}, RedactRequest{Text: "jane doe, jane roe, tomás o'brien, acc-0042, acc-0077", Mode: "mask"})
		if err != nil {
			t.Fatal(err)
		}
		if want := "jane doe, [CLIENTS_NAME], tomás o'brien, [CLIENTS_ACCOUNT], acc-0077"; res.Text != want {
			t.Fatalf("%s: %q, want %q", when, res.Text, want)
		}
	}
	check("after the changes")
	e.restart()
	check("after a restart")
	if n := e.count("kd/"); n != 2 {
		t.Fatalf("%d known-value entries, want 2", n)
	}
	if n := e.count("kr/"); n != 2 {
		t.Fatalf("%d known-value references, want 2", n)
	}
}

// TestDetectNeedsDeterministicStrings: detect is refused where a mention
// could not be replaced by the value's token.
func TestDetectNeedsDeterministicStrings(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, f := range []Field{
		{Name: "n", Type: TypeString, Sensitive: true, Detect: true}, // random tokens
		{Name: "n", Type: TypeNumber, Sensitive: true, Token: tokenizer.KindDeterministic, Detect: true},
		{Name: "n", Type: TypeString, Sensitive: true, Token: tokenizer.KindFormatPreserving, Format: tokenizer.FormatEmail, Detect: true},
		{Name: "n", Type: TypeString, Detect: true},
	} {
		if _, err := e.svc.CreateCollection(context.Background(), RequestMeta{}, Collection{Name: "c", Fields: []Field{f}}); err == nil {
			t.Errorf("field %+v accepted", f)
		}
	}
}

// TestKnownValuesExactMentions is the known-value row of the accuracy
// table: every exact mention of a stored value (any case, any spacing) in
// a generated text is found with its field, and nothing else is.
func TestKnownValuesExactMentions(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.mustCollection(clientsSchema)
	first := []string{"Ana", "Bertrand", "Chiara", "Dmitri", "Émilie", "Farouk", "Grete", "Hiroshi", "Ingrid", "Jonas"}
	last := []string{"Lindqvist", "Okafor", "Ferreira", "Nakamura", "Dubois", "Kowalczyk", "Haddad", "Schäfer", "Moreau", "Van der Berg"}
	var batch []map[string]json.RawMessage
	var names, accounts []string
	for i := range 100 {
		name := first[i%10] + " " + last[i/10]
		acct := fmt.Sprintf("CL-%05d", 7919*i%100000)
		names, accounts = append(names, name), append(accounts, acct)
		batch = append(batch, fields("name", name, "account", acct))
	}
	if _, err := e.svc.CreateRecords(ctx, RequestMeta{}, "clients", batch); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	var want []string
	for i := range 250 {
		name, acct := names[i*37%100], accounts[i*53%100]
		forms := []string{name, strings.ToUpper(name), strings.ToLower(name), strings.ReplaceAll(name, " ", "  ")}
		mention := forms[i%4]
		fmt.Fprintf(&b, "Case %d: %s (account %s) called about order CL-%06d and %s.\n", i, mention, strings.ToLower(acct), i, first[(i+3)%10])
		want = append(want, "clients.name="+mention, "clients.account="+strings.ToLower(acct))
	}
	text := b.String()
	res, err := e.svc.Redact(ctx, RequestMeta{}, RedactRequest{Text: text, Types: []string{"clients.name", "clients.account"}, Mode: "mask"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, en := range res.Entities {
		got = append(got, en.Type+"="+text[en.Start:en.End])
	}
	tp := 0
	for i := range min(len(got), len(want)) {
		if got[i] == want[i] {
			tp++
		}
	}
	if tp != len(want) || len(got) != len(want) {
		t.Fatalf("known values: %d of %d mentions found, %d found in all (precision %.3f, recall %.3f)", tp, len(want), len(got), ratio(tp, len(got)), ratio(tp, len(want)))
	}
	t.Logf("%-14s precision %.3f recall %.3f (%d found, %d false, %d missed)", "known values", ratio(tp, len(got)), ratio(tp, len(want)), tp, len(got)-tp, len(want)-tp)
}

func ratio(a, b int) float64 {
	if b == 0 {
		return 1
	}
	return float64(a) / float64(b)
}
