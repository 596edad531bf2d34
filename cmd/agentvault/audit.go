package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/agentvault/agentvault/vault"
)

const auditUsage = `usage:
  agentvault audit verify --data-dir DIR   recompute the hash chain offline (server stopped);
                                           exits 1 and names the first bad entry on tampering
  agentvault audit export --data-dir DIR [--after SEQ]
                                           write the log as JSON lines (for a SIEM)
`

func audit(args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, auditUsage)
		return errors.New("audit: missing subcommand")
	}
	fs := flag.NewFlagSet("audit "+args[0], flag.ContinueOnError)
	dataDir := fs.String("data-dir", "agentvault-data", "the server's data directory (the server must be stopped)")
	after := fs.Uint64("after", 0, "export entries after this sequence number")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	store, err := vault.OpenStore(filepath.Join(*dataDir, "db"), vault.StoreOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("%w (is the server still running? stop it first)", err)
	}
	defer store.Close()
	ctx := context.Background()
	switch args[0] {
	case "verify":
		res, err := vault.VerifyAudit(ctx, store)
		if err != nil {
			return err
		}
		out, _ := json.MarshalIndent(res, "", "  ")
		fmt.Println(string(out))
		if !res.OK {
			return fmt.Errorf("audit log tampered: first bad entry %d: %s", res.FirstBadSeq, res.Reason)
		}
		return nil
	case "export":
		enc := json.NewEncoder(os.Stdout)
		return vault.ExportAudit(ctx, store, *after, func(e vault.AuditEntry) error { return enc.Encode(e) })
	}
	fmt.Fprint(os.Stderr, auditUsage)
	return fmt.Errorf("audit: unknown subcommand %q", args[0])
}
