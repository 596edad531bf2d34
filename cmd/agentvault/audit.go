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
  agentvault audit verify --data-dir DIR [--pubkey FILE]
        recompute the hash chain and check the signed checkpoints, offline
        (server stopped); exits 1 naming the first bad entry on tampering.
        --pubkey: the checkpoint public key obtained out of band (otherwise
        the copy stored beside the log is used)
  agentvault audit verify --export FILE --pubkey FILE
        check an exported log without the server or its data
  agentvault audit export --data-dir DIR [--after SEQ]
        write the log and its checkpoints as JSON lines (for a SIEM)
  agentvault audit pubkey --data-dir DIR
        print the checkpoint public key (Tink JSON keyset)
`

func audit(args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, auditUsage)
		return errors.New("audit: missing subcommand")
	}
	fs := flag.NewFlagSet("audit "+args[0], flag.ContinueOnError)
	dataDir := fs.String("data-dir", "agentvault-data", "the server's data directory (the server must be stopped)")
	after := fs.Uint64("after", 0, "export entries after this sequence number")
	pubFile := fs.String("pubkey", "", "checkpoint public key file (from agentvault audit pubkey)")
	export := fs.String("export", "", "verify this exported file instead of a data directory")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	var pub []byte
	if *pubFile != "" {
		b, err := os.ReadFile(*pubFile)
		if err != nil {
			return err
		}
		pub = b
	}
	if args[0] == "verify" && *export != "" {
		f, err := os.Open(*export)
		if err != nil {
			return err
		}
		defer f.Close()
		res, err := vault.VerifyExport(f, pub)
		if err != nil {
			return err
		}
		return report(res)
	}
	store, err := vault.OpenStore(filepath.Join(*dataDir, "db"), vault.StoreOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("%w (is the server still running? stop it first)", err)
	}
	defer store.Close()
	ctx := context.Background()
	switch args[0] {
	case "verify":
		res, err := vault.VerifyAudit(ctx, store, pub)
		if err != nil {
			return err
		}
		return report(res)
	case "export":
		return vault.ExportAudit(ctx, store, *after, os.Stdout)
	case "pubkey":
		b, err := vault.StoredAuditPublicKey(store)
		if err != nil {
			return err
		}
		_, err = os.Stdout.Write(b)
		return err
	}
	fmt.Fprint(os.Stderr, auditUsage)
	return fmt.Errorf("audit: unknown subcommand %q", args[0])
}

func report(res vault.VerifyResult) error {
	out, _ := json.MarshalIndent(res, "", "  ")
	fmt.Println(string(out))
	if !res.OK {
		return fmt.Errorf("audit log tampered: first bad entry %d: %s", res.FirstBadSeq, res.Reason)
	}
	return nil
}
