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
	auth   keys.VaultAuth
}

func (k *kmsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&k.kms, "kms", "local", `KEK provider: "local" (development only) or "vault" (VAULT_ADDR, VAULT_TOKEN)`)
	fs.StringVar(&k.vaultKey, "vault-key", "agentvault", "Transit key name, with --kms vault")
	fs.StringVar(&k.vaultMount, "vault-mount", "transit", "Transit mount path, with --kms vault")
	fs.StringVar(&k.auth.Method, "vault-auth", keys.AuthToken, `how to log in to Vault: "token" (VAULT_TOKEN, renewed while renewable), "approle" or "kubernetes" (logged in again before the token expires)`)
	fs.StringVar(&k.auth.Mount, "vault-auth-mount", "", "the auth method's mount path (default: its name)")
	fs.StringVar(&k.auth.RoleID, "vault-role-id", os.Getenv("VAULT_ROLE_ID"), "AppRole role id (VAULT_ROLE_ID)")
	fs.StringVar(&k.auth.SecretIDFile, "vault-secret-id-file", os.Getenv("VAULT_SECRET_ID_FILE"), "file holding the AppRole secret id, re-read at every login (VAULT_SECRET_ID_FILE)")
	fs.StringVar(&k.auth.Role, "vault-k8s-role", os.Getenv("VAULT_K8S_ROLE"), "Vault role for Kubernetes auth (VAULT_K8S_ROLE)")
	fs.StringVar(&k.auth.JWTFile, "vault-k8s-jwt-file", keys.DefaultKubernetesJWT, "the pod's service-account token, for Kubernetes auth")
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
			Auth: k.auth, Logger: log.With("component", "vault"),
		})
		if err != nil {
			return nil, err
		}
		log.Info("KEK in Vault Transit", "vault_addr", os.Getenv("VAULT_ADDR"), "key", k.vaultMount+"/keys/"+k.vaultKey,
			"auth", k.auth.Method, "namespace", os.Getenv("VAULT_NAMESPACE"))
		return kek, nil
	}
	return nil, fmt.Errorf("--kms must be local or vault, not %q", k.kms)
}
