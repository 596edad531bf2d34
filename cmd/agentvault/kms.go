package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"time"

	"github.com/agentvault/agentvault/keys"
)

// kmsFlags say where the KEK is: for serve, and for the offline commands
// that check a backup's MAC (backup --check, restore).
type kmsFlags struct {
	kms        string
	vaultKey   string
	vaultMount string
	// devKEK is the development KEK file (--kms local). serve keeps it in
	// its data directory.
	devKEK string
}

func (k *kmsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&k.kms, "kms", "local", `KEK provider: "local" (development only) or "vault" (VAULT_ADDR, VAULT_TOKEN)`)
	fs.StringVar(&k.vaultKey, "vault-key", "agentvault", "Transit key name, with --kms vault")
	fs.StringVar(&k.vaultMount, "vault-mount", "transit", "Transit mount path, with --kms vault")
}

// open connects to the KEK. create allows making a new development KEK
// (serve on a fresh data directory); offline commands need the existing
// one and say so.
func (k kmsFlags) open(ctx context.Context, log *slog.Logger, create bool) (keys.KEK, error) {
	switch k.kms {
	case "local":
		if !create {
			if _, err := os.Stat(k.devKEK); errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("no development KEK at %s: copy dev-kek.json from the data directory the backup was taken from", k.devKEK)
			}
		}
		kek, err := keys.OpenLocalKEK(k.devKEK)
		if err != nil {
			return nil, err
		}
		if create {
			log.Warn("DEVELOPMENT KEK IN USE: the key-encryption key is a cleartext file beside the data ("+k.devKEK+"). "+
				"Anyone who can read the data directory can decrypt everything. Use --kms vault in production.", "kek_file", k.devKEK)
			fmt.Fprintln(os.Stderr, "\n  *** WARNING: development KEK in "+k.devKEK+" — not for production; use --kms vault ***")
		}
		return kek, nil
	case "vault":
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		kek, err := keys.OpenVaultKEK(cctx, keys.VaultConfig{
			Addr: os.Getenv("VAULT_ADDR"), Token: os.Getenv("VAULT_TOKEN"), Mount: k.vaultMount, Key: k.vaultKey,
		})
		if err != nil {
			return nil, err
		}
		log.Info("KEK in Vault Transit", "vault_addr", os.Getenv("VAULT_ADDR"), "key", k.vaultMount+"/keys/"+k.vaultKey)
		return kek, nil
	}
	return nil, fmt.Errorf("--kms must be local or vault, not %q", k.kms)
}
