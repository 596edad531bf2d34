package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"os"
	"path/filepath"

	"github.com/agentvault/agentvault/storage/badgerstore"
	"github.com/agentvault/agentvault/storage/pgstore"
	"github.com/agentvault/agentvault/vault"
)

const migrateUsage = `usage: agentvault migrate --from-data-dir DIR --to-postgres URL

Copies a stopped Badger vault (DIR) into an empty PostgreSQL database,
every key as it is (nothing is decrypted; the same KEK serves both),
checks the audit chain before, records the migration in it and verifies
it whole after. URL may come from AGENTVAULT_POSTGRES_URL instead.
`

func runMigrate(args []string) error {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, migrateUsage) }
	from := fs.String("from-data-dir", "", "the Badger vault's data directory (its server stopped)")
	to := fs.String("to-postgres", "", "the target PostgreSQL URL (default AGENTVAULT_POSTGRES_URL)")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if *to == "" {
		*to = os.Getenv("AGENTVAULT_POSTGRES_URL")
	}
	if *from == "" || *to == "" || fs.NArg() > 0 {
		fs.Usage()
		return errUsage
	}
	src, err := badgerstore.Open(filepath.Join(*from, "db"), badgerstore.Options{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("%w (is the server still running? stop it first)", err)
	}
	defer src.Close()
	ctx := context.Background()
	dst, err := pgstore.Open(ctx, *to, pgstore.Options{})
	if err != nil {
		return err
	}
	defer dst.Close()
	res, err := vault.Migrate(ctx, src, dst, describePostgres(*to))
	if err != nil {
		return err
	}
	out, _ := json.MarshalIndent(res, "", "  ")
	fmt.Println(string(out))
	return nil
}

// describePostgres names a database for the audit log: scheme, host and
// database, never the user or password.
func describePostgres(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "postgres"
	}
	return "postgres://" + u.Host + u.Path
}
