package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/agentvault/agentvault/storage/badgerstore"
	"github.com/agentvault/agentvault/vault"
	"github.com/agentvault/agentvault/vault/auditlog"
)

const auditUsage = `usage:
  agentvault audit verify --data-dir DIR [--pubkey FILE]
        recompute the hash chain and check the signed checkpoints, offline
        (server stopped); exits 1 naming the first bad entry on tampering.
        --pubkey: the checkpoint public key obtained out of band (otherwise
        the copy stored beside the log is used)
  agentvault audit verify --export FILE --pubkey FILE
        check an exported log without the server or its data
  ... verify [...] --since-checkpoint FILE
        also hold the log to checkpoints saved earlier outside the server
        (GET /v1/audit/checkpoint, the webhook's audit.checkpoint events,
        the server's "audit checkpoint" log lines, an export): fails when
        the log no longer holds an entry one of them signed, with its hash
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
	since := fs.String("since-checkpoint", "", "file of signed checkpoints saved earlier: the log must still hold what they signed")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	var witnesses []auditlog.Checkpoint
	if *since != "" {
		f, err := os.Open(*since)
		if err != nil {
			return err
		}
		witnesses, err = auditlog.ParseCheckpoints(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("--since-checkpoint %s: %w", *since, err)
		}
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
		res, err := auditlog.VerifyExport(f, pub, witnesses...)
		if err != nil {
			return err
		}
		return report(res)
	}
	store, err := badgerstore.Open(filepath.Join(*dataDir, "db"), badgerstore.Options{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("%w (is the server still running? stop it first)", err)
	}
	defer store.Close()
	ctx := context.Background()
	switch args[0] {
	case "verify":
		res, err := vault.VerifyAudit(ctx, store, pub, witnesses...)
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
