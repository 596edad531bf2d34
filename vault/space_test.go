package vault

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
)

// TestStorageReserve: below the reserve, writes are refused with
// ErrStorageFull and store nothing, reads and detokenizes (an audit entry
// each) go on down to a quarter of it, and below that they are refused
// too; with space back, writes go through again.
func TestStorageReserve(t *testing.T) {
	t.Parallel()
	sc := newScene(t)
	ctx := context.Background()
	sc.grant(GrantRequest{Fields: []string{"name"}, Reveal: RevealPlain})
	nameA := tokenOf(t, sc.recA, "name")
	free, err := sc.badger().FreeBytes()
	if err != nil || free <= 0 {
		t.Fatalf("free bytes: %d %v", free, err)
	}
	write := func() error {
		_, err := sc.svc.CreateRecords(ctx, RequestMeta{Actor: sc.writer}, "hr", []map[string]json.RawMessage{fields("name", "Cy")})
		return err
	}
	reveal := func() error {
		_, err := sc.svc.Detokenize(ctx, RequestMeta{Actor: sc.agent}, DetokenizeRequest{Tokens: []string{nameA}, Purpose: "payroll"})
		return err
	}
	sc.badger().SetReserve(free * 2) // the first reveal makes the token-hash key: allowed too
	if err := reveal(); err != nil {
		t.Fatalf("first reveal below the reserve: %v", err)
	}
	before, _, _ := sc.svc.ListAudit(ctx, AuditFilter{Limit: 1000})
	tests := []struct {
		name              string
		reserve           int64
		writeOK, revealOK bool
	}{
		{"room for everything", free / 2, true, true},
		{"writes refused, reveals go on", free * 2, false, true},
		{"everything refused", free * 8, false, false},
		{"space back", 1, true, true},
	}
	for _, tt := range tests {
		sc.badger().SetReserve(tt.reserve)
		if err := write(); (err == nil) != tt.writeOK || (err != nil && !errors.Is(err, ErrStorageFull)) {
			t.Fatalf("%s: write: %v", tt.name, err)
		}
		if err := reveal(); (err == nil) != tt.revealOK || (err != nil && !errors.Is(err, ErrStorageFull)) {
			t.Fatalf("%s: reveal: %v", tt.name, err)
		}
		if err := sc.store.Check(); (err == nil) != tt.writeOK {
			t.Fatalf("%s: readiness: %v", tt.name, err)
		}
	}
	after, _, _ := sc.svc.ListAudit(ctx, AuditFilter{Limit: 1000})
	// Two writes and three reveals got through, each with its entry;
	// the refused ones left none.
	if len(after)-len(before) != 5 {
		t.Fatalf("%d new audit entries, want 5", len(after)-len(before))
	}
}
