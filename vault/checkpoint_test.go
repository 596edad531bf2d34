package vault

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/agentvault/agentvault/storage"
	"github.com/agentvault/agentvault/vault/auditlog"
)

// checkpointed returns a scene with a few detokenize entries and a signed
// checkpoint over them.
func checkpointed(t *testing.T) (*scene, *Checkpoint) {
	sc := newScene(t)
	sc.grant(GrantRequest{Fields: []string{"name"}, Reveal: RevealPlain})
	for range 3 {
		sc.detok(sc.agent, "payroll", tokenOf(t, sc.recA, "name"))
	}
	cp, err := sc.svc.Checkpoint(context.Background())
	if err != nil || cp == nil {
		t.Fatalf("checkpoint: %v", err)
	}
	if again, _ := sc.svc.Checkpoint(context.Background()); again.Seq != cp.Seq {
		t.Fatal("a second checkpoint with nothing new")
	}
	return sc, cp
}

func TestCheckpointTruncation(t *testing.T) {
	t.Parallel()
	sc, cp := checkpointed(t)
	ctx := context.Background()
	if v, _ := sc.svc.VerifyAudit(ctx); !v.OK || v.Checkpoints != 1 || v.Entries != cp.Seq {
		t.Fatalf("before: %+v", v)
	}
	// Cut off the last two entries the checkpoint covers: the chain that
	// remains is internally consistent, only the checkpoint catches it.
	if err := sc.store.Update(ctx, false, func(txn storage.Txn) error {
		txn.Delete(auditKey(cp.Seq))
		return txn.Delete(auditKey(cp.Seq - 1))
	}); err != nil {
		t.Fatal(err)
	}
	v, _ := sc.svc.VerifyAudit(ctx)
	if v.OK || v.FirstBadSeq != cp.Seq-1 || !strings.Contains(v.Reason, "cut off") {
		t.Fatalf("truncated tail: %+v", v)
	}
}

func TestCheckpointForgery(t *testing.T) {
	t.Parallel()
	sc, cp := checkpointed(t)
	ctx := context.Background()
	// Rewrite the last entry and its checkpoint's hash without the key.
	forged := *cp
	forged.Hash = strings.Repeat("0", 64)
	b, _ := json.Marshal(forged)
	sc.store.Update(ctx, false, func(txn storage.Txn) error { return txn.Set(checkpointKey(cp.Seq), b) })
	v, _ := sc.svc.VerifyAudit(ctx)
	if v.OK || v.FirstBadSeq != cp.Seq || !strings.Contains(v.Reason, "signature") {
		t.Fatalf("forged checkpoint: %+v", v)
	}
}

// TestVerifyExport checks an exported log the way an outside auditor
// would: with only the export and the public key.
func TestVerifyExport(t *testing.T) {
	t.Parallel()
	sc, cp := checkpointed(t)
	ctx := context.Background()
	pub, err := sc.svc.AuditPublicKey(ctx)
	if err != nil || !bytes.Contains(pub, []byte("Ed25519")) {
		t.Fatalf("public key: %s %v", pub, err)
	}
	if bytes.Contains(pub, []byte("privateKey")) || bytes.Contains(pub, []byte("PRIVATE")) {
		t.Fatal("the public keyset holds private material")
	}
	var export bytes.Buffer
	if err := ExportAudit(ctx, sc.store, 0, &export); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(export.String()), "\n")
	if v, err := auditlog.VerifyExport(strings.NewReader(export.String()), pub); err != nil || !v.OK || v.Checkpoints != 1 || v.Entries != cp.Seq {
		t.Fatalf("clean export: %+v %v", v, err)
	}
	other := newScene(t)
	otherPub, _ := other.svc.AuditPublicKey(ctx)
	tests := []struct {
		name   string
		lines  func() []string
		pub    []byte
		bad    uint64
		reason string
	}{
		{"another server's key", func() []string { return lines }, otherPub, cp.Seq, "signature"},
		{"edited entry", func() []string {
			l := append([]string(nil), lines...)
			l[2] = strings.Replace(l[2], `"decision":"ok"`, `"decision":"denied"`, 1)
			return l
		}, pub, 3, "altered"},
		{"dropped entry", func() []string {
			return append(append([]string(nil), lines[:1]...), lines[2:]...)
		}, pub, 2, "missing"},
		{"cut tail", func() []string {
			return append(append([]string(nil), lines[:len(lines)-3]...), lines[len(lines)-1]) // keep the checkpoint line
		}, pub, cp.Seq - 1, "cut off"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := auditlog.VerifyExport(strings.NewReader(strings.Join(tt.lines(), "\n")), tt.pub)
			if err != nil {
				t.Fatal(err)
			}
			if v.OK || v.FirstBadSeq != tt.bad || !strings.Contains(v.Reason, tt.reason) {
				t.Fatalf("got %+v, want first bad %d (%s)", v, tt.bad, tt.reason)
			}
		})
	}
	if _, err := auditlog.VerifyExport(strings.NewReader(export.String()), nil); err == nil {
		t.Fatal("an export verified without a public key")
	}
}

// TestCompressedAuditEntries checks that large entries, stored compressed,
// read, verify and export like plain ones, and that tampering with their
// stored bytes is caught.
func TestCompressedAuditEntries(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.mustCollection(payrollSchema)
	agent := e.agentWithGrant(GrantRequest{Collection: "payroll", Fields: []string{"name"}, Purpose: "p"})
	var toks []string
	for tok := range e.fill(300) {
		if strings.HasPrefix(tok, "tok_") {
			toks = append(toks, tok)
		}
	}
	if _, err := e.svc.Detokenize(ctx, RequestMeta{Actor: agent}, DetokenizeRequest{Tokens: toks, Purpose: "p"}); err != nil {
		t.Fatal(err)
	}
	head, _, _ := e.svc.AuditHead(ctx)
	var stored []byte
	e.store.View(func(txn storage.Txn) error {
		item, _ := txn.Get(auditKey(head))
		stored, _ = item.ValueCopy(nil)
		return nil
	})
	if stored[0] == '{' { // compressed entries start with a marker byte, never JSON
		t.Fatalf("a %d-token decision entry is stored uncompressed", len(toks))
	}
	es, _, err := e.svc.ListAudit(ctx, AuditFilter{Action: "detokenize"})
	if err != nil || len(es) != 1 || len(es[0].Tokens) != 300 || es[0].Seq != head {
		t.Fatalf("list: %d entries, %v", len(es), err)
	}
	raw, _ := auditlog.Decode(stored)
	if len(stored) > len(raw)/2 {
		t.Errorf("compressed entry is %d bytes of %d", len(stored), len(raw))
	}
	cp, err := e.svc.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := e.svc.AuditPublicKey(ctx)
	var export bytes.Buffer
	if err := ExportAudit(ctx, e.store, 0, &export); err != nil {
		t.Fatal(err)
	}
	if v, err := auditlog.VerifyExport(&export, pub); err != nil || !v.OK || v.Entries != cp.Seq {
		t.Fatalf("export of compressed entries: %+v %v", v, err)
	}
	// Flip one byte inside the compressed entry: verification names it.
	bad := append([]byte(nil), stored...)
	bad[len(bad)/2] ^= 0x40
	e.store.Update(context.Background(), false, func(txn storage.Txn) error { return txn.Set(auditKey(head), bad) })
	if v, _ := e.svc.VerifyAudit(ctx); v.OK || v.FirstBadSeq != head {
		t.Fatalf("tampered compressed entry: %+v", v)
	}
}

// TestWitnessCatchesTruncation is the review's reproduction: three
// reveals and the checkpoint covering them deleted from the database
// verify as ok, even with the pinned key; a checkpoint saved outside
// beforehand (from the log line the server wrote) catches the cut.
func TestWitnessCatchesTruncation(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	e := newEnvTuned(t, func(c *Config) { c.Logger = slog.New(slog.NewJSONHandler(&logs, nil)) })
	e.mustCollection(hrSchema)
	ctx := context.Background()
	recs, err := e.svc.CreateRecords(ctx, RequestMeta{}, "hr", []map[string]json.RawMessage{fields("name", "Ann")})
	if err != nil {
		t.Fatal(err)
	}
	agent := e.agentWithGrant(GrantRequest{Collection: "hr", Fields: []string{"name"}, Purpose: "p"})
	// A first reveal makes the token-hash key (an entry of its own).
	if _, err := e.svc.Detokenize(ctx, RequestMeta{Actor: agent}, DetokenizeRequest{Tokens: []string{tokenOf(t, recs[0], "name")}, Purpose: "p"}); err != nil {
		t.Fatal(err)
	}
	before, err := e.svc.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := e.svc.Detokenize(ctx, RequestMeta{Actor: agent}, DetokenizeRequest{Tokens: []string{tokenOf(t, recs[0], "name")}, Purpose: "p"}); err != nil {
			t.Fatal(err)
		}
	}
	covering, err := e.svc.Checkpoint(ctx)
	if err != nil || covering.Seq != before.Seq+3 {
		t.Fatalf("checkpoint over the reveals: %+v %v", covering, err)
	}
	// The auditor's copy: the checkpoint as the server logged it.
	saved, err := auditlog.ParseCheckpoints(strings.NewReader(logs.String()))
	if err != nil || len(saved) != 2 || saved[1].Hash != covering.Hash {
		t.Fatalf("checkpoints read back from the log: %+v %v", saved, err)
	}
	pub, _ := e.svc.AuditPublicKey(ctx)
	if v, _ := VerifyAudit(ctx, e.store, pub); !v.OK || v.LastCheckpoint != covering.Seq || v.UnsignedEntries != 0 {
		t.Fatalf("before the cut: %+v", v)
	}
	// The attacker deletes the three reveal entries and the checkpoint.
	if err := e.store.Update(ctx, false, func(txn storage.Txn) error {
		for seq := before.Seq + 1; seq <= covering.Seq; seq++ {
			txn.Delete(auditKey(seq))
		}
		return txn.Delete(checkpointKey(covering.Seq))
	}); err != nil {
		t.Fatal(err)
	}
	if v, _ := VerifyAudit(ctx, e.store, pub); !v.OK {
		t.Fatalf("the cut is invisible without a witness, which is the point of the test: %+v", v)
	}
	v, err := VerifyAudit(ctx, e.store, pub, saved...)
	if err != nil || v.OK || v.FirstBadSeq != before.Seq+1 || !strings.Contains(v.Reason, "saved outside") || !strings.Contains(v.Reason, "cut off") {
		t.Fatalf("with the saved checkpoint: %+v %v", v, err)
	}
	if v, _ := e.svc.VerifyAudit(ctx, saved[1]); v.OK {
		t.Fatal("the service's own verify missed the cut")
	}
	// A witness whose hash was changed fails its signature.
	forged := saved[0]
	forged.Hash = strings.Repeat("0", 64)
	if v, _ := VerifyAudit(ctx, e.store, pub, forged); v.OK || !strings.Contains(v.Reason, "bad signature") {
		t.Fatalf("forged witness: %+v", v)
	}
}

// TestUnsignedEntries: verify says how far the head is past the newest
// checkpoint.
func TestUnsignedEntries(t *testing.T) {
	t.Parallel()
	sc, cp := checkpointed(t)
	sc.detok(sc.agent, "payroll", tokenOf(t, sc.recA, "name"))
	sc.detok(sc.agent, "payroll", tokenOf(t, sc.recA, "name"))
	v, _ := sc.svc.VerifyAudit(context.Background())
	if !v.OK || v.LastCheckpoint != cp.Seq || v.UnsignedEntries != 2 {
		t.Fatalf("%+v", v)
	}
}

// syncBuffer collects log output from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
