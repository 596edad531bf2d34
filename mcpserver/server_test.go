package mcpserver

import (
	"errors"
	"fmt"
	"testing"

	"github.com/agentvault/agentvault/vault"
)

type apiErr struct{ code, msg string }

func (e apiErr) Error() string        { return e.msg + " (" + e.code + ")" }
func (e apiErr) ErrorCode() string    { return e.code }
func (e apiErr) ErrorMessage() string { return e.msg }

// TestToolError: a refusal reads "code: message"; anything else reads as
// internal or unavailable, without its detail.
func TestToolError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		want string
	}{
		{&vault.Error{Kind: vault.ErrNotFound, Code: "record_not_found", Message: "no record"}, "record_not_found: no record"},
		{fmt.Errorf("wrapped: %w", &vault.Error{Kind: vault.ErrForbidden, Code: "forbidden", Message: "no"}), "forbidden: no"},
		{apiErr{"approval_not_redeemable", "approval is redeemed"}, "approval_not_redeemable: approval is redeemed"},
		{fmt.Errorf("%w: badger: /var/lib/agentvault/db/000042.vlog: input/output error", vault.ErrUnavailable), "unavailable: the vault is unavailable; try again later"},
		{errors.New("decrypt hr/123 field ssn: cipher: message authentication failed"), "internal: the vault could not answer; try again later"},
	}
	for _, tt := range tests {
		if got := toolError(tt.err).Error(); got != tt.want {
			t.Errorf("toolError(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}
