package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/agentvault/agentvault/vault"
)

const backupUsage = `usage:
  agentvault backup --out FILE [--server URL] [TLS flags]
        take an online backup from a running server (operator token in
        AGENTVAULT_TOKEN). It is written to FILE.partial, read back and
        checked whole, synced, and only then renamed to FILE.
  agentvault backup --check FILE
        check a backup file offline: framing, checksum, header
  agentvault restore --data-dir DIR FILE
        restore FILE into DIR, a new data directory, with the server
        stopped; the restored audit chain is verified before it is used.
        The KEK is not in the backup: with --kms vault the server needs the
        same Transit key; with the development KEK, copy dev-kek.json from
        the old data directory into DIR.
`

func backupCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("backup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, backupUsage) }
	c := clientFlags(fs)
	out := fs.String("out", "", "write the backup to this file")
	check := fs.String("check", "", "check this backup file offline")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 || (*out == "") == (*check == "") {
		fmt.Fprint(stderr, backupUsage)
		return errUsage
	}
	if *check != "" {
		f, err := os.Open(*check)
		if err != nil {
			return err
		}
		defer f.Close()
		h, st, err := vault.CheckBackup(f)
		if err != nil {
			return fmt.Errorf("%s: %w", *check, err)
		}
		printBackup(stdout, *check, h, st)
		return nil
	}
	if c.token == "" {
		return errors.New("no token: set AGENTVAULT_TOKEN (or --token) to an operator's API token")
	}
	if err := c.setupTLS(); err != nil {
		return err
	}
	c.http.Timeout = 0 // a backup takes as long as the database is big
	h, st, err := fetchBackup(c, *out)
	if err != nil {
		return err
	}
	printBackup(stdout, *out, h, st)
	return nil
}

// fetchBackup streams a backup into path.partial, checks it whole, syncs
// it and renames it to path, so path only ever names a complete backup.
func fetchBackup(c *client, path string) (vault.BackupHeader, vault.BackupStats, error) {
	var (
		h  vault.BackupHeader
		st vault.BackupStats
	)
	resp, err := c.request("GET", "/v1/backup", nil)
	if err != nil {
		return h, st, err
	}
	defer resp.Body.Close()
	tmp := path + ".partial"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return h, st, err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := io.Copy(f, resp.Body); err != nil {
		return h, st, fmt.Errorf("backup transfer broke off: %w", err)
	}
	if err := f.Sync(); err != nil {
		return h, st, err
	}
	if err := f.Close(); err != nil {
		return h, st, err
	}
	rf, err := os.Open(tmp)
	if err != nil {
		return h, st, err
	}
	h, st, err = vault.CheckBackup(rf)
	rf.Close()
	if err != nil {
		return h, st, fmt.Errorf("the backup received does not check: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return h, st, err
	}
	ok = true
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return h, st, err
	}
	defer d.Close()
	return h, st, d.Sync()
}

func printBackup(w io.Writer, path string, h vault.BackupHeader, st vault.BackupStats) {
	fmt.Fprintf(w, "%s: backup of %s, %d entries (%d bytes uncompressed), recorded as audit entry %d.\n",
		path, h.CreatedAt.UTC().Format("2006-01-02 15:04:05Z"), st.Entries, st.Bytes, h.AuditSeq)
	fmt.Fprintf(w, "Its keysets are wrapped by the KEK %s (%s, version %d at backup time); the KEK is not in the backup.\n",
		h.KEK.Key, h.KEK.Provider, h.KEK.Version)
}

func restoreCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("restore", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, backupUsage) }
	dataDir := fs.String("data-dir", "", "the new data directory to restore into")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 || *dataDir == "" {
		fmt.Fprint(stderr, backupUsage)
		return errUsage
	}
	res, err := vault.RestoreBackup(context.Background(), fs.Arg(0), filepath.Join(*dataDir, "db"), vault.StoreOptions{})
	if err != nil {
		return fmt.Errorf("restore: %w (nothing was restored)", err)
	}
	printBackup(stdout, fs.Arg(0), res.Header, res.Stats)
	fmt.Fprintf(stdout, "Restored into %s; the audit chain verifies: %d entries, head %s.\n", *dataDir, res.Audit.Entries, res.Audit.Head)
	if res.Header.KEK.Provider == "local" {
		fmt.Fprintf(stdout, "Development KEK: copy dev-kek.json from the old data directory into %s before starting the server.\n", *dataDir)
	}
	return nil
}
