package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"

	"github.com/agentvault/agentvault/keys"
	"github.com/agentvault/agentvault/storage/pgstore"
	"github.com/agentvault/agentvault/vault"
)

const backupUsage = `usage:
  agentvault backup --out FILE [--server URL] [TLS flags]
        take an online backup from a running server (operator token in
        AGENTVAULT_TOKEN). It is written to FILE.partial (created new:
        an existing FILE.partial is refused), read back and checked whole
        (framing and checksum; its MAC needs the KEK: use --check), synced,
        and only then renamed to FILE.
  agentvault backup --check FILE [--kms local --dev-kek PATH | --kms vault ...]
        check a backup file offline: framing, checksum, and its MAC under
        the KEK it was taken under; any changed byte fails
  agentvault restore --data-dir DIR [--kms ...] [--pubkey FILE] FILE
        restore FILE into DIR, a new data directory, with the server
        stopped. The backup's MAC is checked with the KEK, the restored
        audit chain is verified (with --pubkey, against that checkpoint
        key: agentvault audit pubkey), and only then is it moved into
        place. The KEK is not in the backup: with --kms vault, the same
        Transit key (VAULT_ADDR, VAULT_TOKEN); with the development KEK,
        copy dev-kek.json from the old data directory into DIR first.
  agentvault restore --to-postgres URL [--kms ...] [--pubkey FILE] FILE
        restore FILE into an empty PostgreSQL database instead: the same
        checks in a temporary data directory (in $TMPDIR), then a copy as
        agentvault migrate makes, its audit chain verified again.
`

func backupCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("backup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, backupUsage) }
	c := clientFlags(fs)
	var kf kmsFlags
	kf.register(fs)
	fs.StringVar(&kf.devKEK, "dev-kek", "", "--check with --kms local: the development KEK file (dev-kek.json of the data directory)")
	out := fs.String("out", "", "write the backup to this file")
	check := fs.String("check", "", "check this backup file offline (needs the KEK)")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 || (*out == "") == (*check == "") {
		fmt.Fprint(stderr, backupUsage)
		return errUsage
	}
	if *check != "" {
		if kf.kms == "local" && kf.devKEK == "" {
			return errors.New("--check needs the KEK the backup was taken under: --dev-kek PATH (development KEK) or --kms vault")
		}
		kek, err := kf.open(context.Background(), quietLogger(), false)
		if err != nil {
			return err
		}
		f, err := os.Open(*check)
		if err != nil {
			return err
		}
		defer f.Close()
		h, st, err := vault.CheckBackup(f, keys.NewManager(kek))
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
	// Created new, never followed: a FILE.partial that is already there
	// (a planted symlink, another backup running) is refused, not
	// truncated.
	tmp := path + ".partial"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY|syscall.O_NOFOLLOW, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return h, st, fmt.Errorf("%s already exists (an earlier backup that broke off, or one still running): remove it and retry", tmp)
	}
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
	h, st, err = vault.CheckBackupFraming(rf)
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
	if st.Authenticated {
		fmt.Fprintln(w, "Its MAC verifies under the KEK: it is the backup the server wrote, unchanged.")
	} else {
		fmt.Fprintln(w, "It arrived whole (framing and checksum); its MAC was not checked here: agentvault backup --check FILE, with the KEK, does.")
	}
	fmt.Fprintf(w, "Its keysets are wrapped by the KEK %s (%s, version %d at backup time); the KEK is not in the backup.\n",
		h.KEK.Key, h.KEK.Provider, h.KEK.Version)
}

func restoreCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("restore", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, backupUsage) }
	dataDir := fs.String("data-dir", "", "the new data directory to restore into")
	toPG := fs.String("to-postgres", "", "restore into this empty PostgreSQL database instead (through a temporary Badger copy in $TMPDIR)")
	var kf kmsFlags
	kf.register(fs)
	fs.StringVar(&kf.devKEK, "dev-kek", "", "with --kms local: the development KEK file (default: DIR/dev-kek.json)")
	pubkey := fs.String("pubkey", "", "pin the audit checkpoint public key (agentvault audit pubkey): the restored log must verify under it")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 || (*dataDir == "") == (*toPG == "") {
		fmt.Fprint(stderr, backupUsage)
		return errUsage
	}
	if kf.devKEK == "" && *dataDir != "" {
		kf.devKEK = filepath.Join(*dataDir, "dev-kek.json")
	}
	if kf.kms == "local" && kf.devKEK == "" {
		return errors.New("restore --to-postgres with --kms local needs --dev-kek FILE (the development KEK the backup was taken under)")
	}
	ro := vault.RestoreOptions{}
	if *pubkey != "" {
		b, err := os.ReadFile(*pubkey)
		if err != nil {
			return fmt.Errorf("--pubkey: %w", err)
		}
		ro.AuditPublicKey = b
	}
	kek, err := kf.open(context.Background(), quietLogger(), false)
	if err != nil {
		return fmt.Errorf("restore: %w (nothing was restored)", err)
	}
	ro.Keys = keys.NewManager(kek)
	if *toPG != "" {
		return restoreToPostgres(fs.Arg(0), *toPG, ro, stdout)
	}
	res, err := vault.RestoreBackup(context.Background(), fs.Arg(0), filepath.Join(*dataDir, "db"), ro)
	if err != nil {
		return fmt.Errorf("restore: %w (nothing was restored)", err)
	}
	printBackup(stdout, fs.Arg(0), res.Header, res.Stats)
	fmt.Fprintf(stdout, "Restored into %s; the audit chain verifies: %d entries, head %s.\n", *dataDir, res.Audit.Entries, res.Audit.Head)
	if res.Header.KEK.Provider == "local" && kf.devKEK != filepath.Join(*dataDir, "dev-kek.json") {
		fmt.Fprintf(stdout, "Development KEK: copy %s into %s before starting the server.\n", kf.devKEK, *dataDir)
	}
	return nil
}

// quietLogger is for offline commands: their output is what they print.
func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// restoreToPostgres restores a backup into an empty PostgreSQL database.
func restoreToPostgres(path, url string, ro vault.RestoreOptions, stdout io.Writer) error {
	ctx := context.Background()
	dst, err := pgstore.Open(ctx, url, pgstore.Options{})
	if err != nil {
		return fmt.Errorf("restore: %w (nothing was restored)", err)
	}
	defer dst.Close()
	res, mres, err := vault.RestoreBackupToStore(ctx, path, os.TempDir(), dst, describePostgres(url), ro)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	printBackup(stdout, path, res.Header, res.Stats)
	fmt.Fprintf(stdout, "Restored into %s; the audit chain verifies: %d entries, head %s.\n", describePostgres(url), mres.Audit.Entries, mres.Audit.Head)
	return nil
}
