package vault

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// TestRedactRestore: a prompt goes through redact with nothing sensitive
// left in it, the same value gets the same token, and restore puts back
// exactly what the agent's grants and approvals allow, audited.
func TestRedactRestore(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	writer := RequestMeta{}
	prompt := "Customer jane.doe@example.com paid with 4111 1111 1111 1111; write to jane.doe@example.com about SSN 123-45-6789."
	res, err := e.svc.Redact(ctx, writer, RedactRequest{Text: prompt})
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"jane.doe@example.com", "4111 1111 1111 1111", "123-45-6789"} {
		if strings.Contains(res.Text, secret) {
			t.Fatalf("redacted text still holds %q: %s", secret, res.Text)
		}
	}
	if len(res.Entities) != 4 || res.Entities[0].Token != res.Entities[2].Token || res.Entities[0].Token == res.Entities[1].Token {
		t.Fatalf("entities: %+v", res.Entities)
	}
	if got := prompt[res.Entities[1].Start:res.Entities[1].End]; got != "4111 1111 1111 1111" {
		t.Fatalf("offsets point at %q", got)
	}
	// A second redact of the same values stores nothing new.
	again, _ := e.svc.Redact(ctx, writer, RedactRequest{Text: "cc jane.doe@example.com"})
	if again.Entities[0].Token != res.Entities[0].Token {
		t.Fatal("the same email got another token")
	}
	if recs, _, _ := e.svc.ListRecords(ctx, writer, "text", "", 100, ""); len(recs) != 3 {
		t.Fatalf("%d values stored, want 3", len(recs))
	}
	// Mask mode stores nothing.
	masked, _ := e.svc.Redact(ctx, writer, RedactRequest{Text: "mail bob@example.org", Mode: "mask"})
	if masked.Text != "mail [EMAIL]" || masked.Entities[0].Token != "" {
		t.Fatalf("mask: %+v", masked)
	}

	// The model's answer mentions the tokens; the agent may see emails
	// plain and cards masked, SSNs only after approval.
	answer := "Send the receipt to " + res.Entities[0].Token + " (card " + res.Entities[1].Token + ", SSN " + res.Entities[3].Token + ")."
	agent := e.agentWithGrant(GrantRequest{Collection: "text", Fields: []string{"email"}, Purpose: "support"})
	as := RequestMeta{Actor: agent}
	if _, err := e.svc.CreateGrant(ctx, RequestMeta{}, GrantRequest{PrincipalID: agent.ID, Collection: "text", Fields: []string{"credit_card"}, Purpose: "support", TTL: "1h", Reveal: RevealMasked}); err != nil {
		t.Fatal(err)
	}
	out, err := e.svc.RestoreText(ctx, as, TextRestoreRequest{Text: answer, Purpose: "support"})
	if err != nil {
		t.Fatal(err)
	}
	want := "Send the receipt to jane.doe@example.com (card **** **** **** 1111, SSN " + res.Entities[3].Token + ")."
	if out.Text != want || len(out.Results) != 3 || out.Results[2].Status != StatusDenied {
		t.Fatalf("restored: %q %+v", out.Text, out.Results)
	}
	es, _, _ := e.svc.ListAudit(ctx, AuditFilter{Action: "detokenize", Actor: agent.ID})
	if len(es) != 1 || es[0].Purpose != "support" || len(es[0].Tokens) != 3 {
		t.Fatalf("restore audit: %+v", es)
	}
	for _, bad := range []RedactRequest{{Text: "x", Mode: "blur"}, {Text: "x", Types: []string{"NAME"}}} {
		if _, err := e.svc.Redact(ctx, writer, bad); err == nil {
			t.Errorf("redact %+v accepted", bad)
		}
	}
}

// TestRestoreNeedsApproval: a restore that trips an approval rule (here a
// grant's approval_over) is held, and the same text with the approval id
// restores once after a person approves.
func TestRestoreNeedsApproval(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	red, err := e.svc.Redact(ctx, RequestMeta{}, RedactRequest{Text: "a@example.com b@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	agent, _, _ := e.svc.CreatePrincipal(ctx, RequestMeta{}, "bot", []Role{RoleAgent})
	approver, _, _ := e.svc.CreatePrincipal(ctx, RequestMeta{}, "carol", []Role{RoleApprover})
	one := 1
	if _, err := e.svc.CreateGrant(ctx, RequestMeta{}, GrantRequest{PrincipalID: agent.ID, Collection: "text", Fields: []string{"email"}, Purpose: "p", TTL: "1h", Reveal: RevealPlain, ApprovalOver: &one}); err != nil {
		t.Fatal(err)
	}
	as := RequestMeta{Actor: agent}
	held, err := e.svc.RestoreText(ctx, as, TextRestoreRequest{Text: red.Text, Purpose: "p"})
	if err != nil || held.Text != red.Text || held.Results[0].Status != StatusPending {
		t.Fatalf("held: %+v %v", held, err)
	}
	id := held.Results[0].ApprovalID
	if _, err := e.svc.DecideApproval(ctx, RequestMeta{Actor: approver}, id, true, "ok for the ticket"); err != nil {
		t.Fatal(err)
	}
	out, err := e.svc.RestoreText(ctx, as, TextRestoreRequest{Text: red.Text, Purpose: "p", ApprovalID: id})
	if err != nil || out.Text != "a@example.com b@example.com" {
		t.Fatalf("redeemed: %+v %v", out, err)
	}
	if _, err := e.svc.RestoreText(ctx, as, TextRestoreRequest{Text: red.Text, Purpose: "p", ApprovalID: id}); !errors.Is(err, ErrConflict) {
		t.Fatalf("a second redemption: %v", err)
	}
}
