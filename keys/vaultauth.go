package keys

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
)

// Vault auth methods agentvault logs in with.
const (
	// AuthToken uses VAULT_TOKEN as given, renewing it while it is
	// renewable. When it reaches its max TTL it stops working: production
	// deployments use a login method instead.
	AuthToken = "token"
	// AuthAppRole logs in with a role id and a secret id read from a file
	// (re-read at every login, so it can be rotated).
	AuthAppRole = "approle"
	// AuthKubernetes logs in with the pod's service-account JWT.
	AuthKubernetes = "kubernetes"
)

// DefaultKubernetesJWT is where Kubernetes mounts a pod's service-account
// token.
const DefaultKubernetesJWT = "/var/run/secrets/kubernetes.io/serviceaccount/token"

// VaultAuth says how to log in to Vault. The token a login returns is
// renewed while Vault allows, and replaced by a new login before it
// expires.
type VaultAuth struct {
	Method string // AuthToken (default), AuthAppRole or AuthKubernetes
	Mount  string // the auth method's mount path; default its name
	// AppRole.
	RoleID       string
	SecretIDFile string
	// Kubernetes.
	Role    string
	JWTFile string // default DefaultKubernetesJWT
}

func (a VaultAuth) method() string {
	if a.Method == "" {
		return AuthToken
	}
	return a.Method
}

func (a VaultAuth) mount() string {
	if m := strings.Trim(a.Mount, "/"); m != "" {
		return m
	}
	return a.method()
}

func (a VaultAuth) check(token string) error {
	switch a.method() {
	case AuthToken:
		if token == "" {
			return errors.New("vault KEK: VAULT_TOKEN is not set (or choose --vault-auth approle or kubernetes)")
		}
	case AuthAppRole:
		if a.RoleID == "" || a.SecretIDFile == "" {
			return errors.New("vault KEK: AppRole needs a role id (--vault-role-id, VAULT_ROLE_ID) and a secret id file (--vault-secret-id-file)")
		}
	case AuthKubernetes:
		if a.Role == "" {
			return errors.New("vault KEK: Kubernetes auth needs the Vault role (--vault-k8s-role)")
		}
	default:
		return fmt.Errorf("vault KEK: unknown auth method %q (token, approle or kubernetes)", a.Method)
	}
	return nil
}

// login gets a working token: with AuthToken it looks VAULT_TOKEN up (its
// TTL, whether it renews), otherwise it logs in. It returns the secret a
// lifetime watcher renews. Credentials Vault refuses are a plain error; an
// outage is ErrKMSUnavailable.
func (k *VaultKEK) login(ctx context.Context) (*api.Secret, error) {
	method := k.auth.method()
	if method == AuthToken {
		s, err := k.client.Auth().Token().LookupSelfWithContext(ctx)
		if err != nil {
			return nil, classifyLoginErr("look up VAULT_TOKEN", err)
		}
		ttl, _ := s.TokenTTL()
		renewable, _ := s.TokenIsRenewable()
		k.setExpiry(ttl)
		return &api.Secret{Auth: &api.SecretAuth{ClientToken: k.client.Token(), Renewable: renewable, LeaseDuration: int(ttl.Seconds())}}, nil
	}
	var data map[string]any
	switch method {
	case AuthAppRole:
		id, err := readCredentialFile(k.auth.SecretIDFile, "AppRole secret id")
		if err != nil {
			return nil, err
		}
		data = map[string]any{"role_id": k.auth.RoleID, "secret_id": id}
	case AuthKubernetes:
		path := k.auth.JWTFile
		if path == "" {
			path = DefaultKubernetesJWT
		}
		jwt, err := readCredentialFile(path, "Kubernetes service-account token")
		if err != nil {
			return nil, err
		}
		data = map[string]any{"role": k.auth.Role, "jwt": jwt}
	}
	s, err := k.client.Logical().WriteWithContext(ctx, "auth/"+k.auth.mount()+"/login", data)
	if err != nil {
		return nil, classifyLoginErr("log in to Vault ("+method+")", err)
	}
	if s == nil || s.Auth == nil || s.Auth.ClientToken == "" {
		return nil, fmt.Errorf("log in to Vault (%s): the answer holds no token", method)
	}
	k.client.SetToken(s.Auth.ClientToken)
	k.loggedIn.Store(true)
	ttl := time.Duration(s.Auth.LeaseDuration) * time.Second
	k.setExpiry(ttl)
	k.log.Info("logged in to Vault", "method", method, "ttl", ttl, "renewable", s.Auth.Renewable)
	return s, nil
}

func (k *VaultKEK) setExpiry(ttl time.Duration) {
	if ttl <= 0 {
		k.expiry.Store(0)
		return
	}
	k.expiry.Store(time.Now().Add(ttl).UnixNano())
}

// readCredentialFile reads a secret from a file, trimmed; the secret never
// appears in an error.
func readCredentialFile(path, what string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read the %s: %w", what, err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("the %s file %s is empty", what, path)
	}
	return s, nil
}

// classifyLoginErr: Vault refusing the credentials (400, 401, 403) cannot
// be fixed by retrying; anything else is an outage.
func classifyLoginErr(op string, err error) error {
	var re *api.ResponseError
	if errors.As(err, &re) && re.StatusCode < http.StatusInternalServerError {
		return fmt.Errorf("%s: Vault refused the credentials (%d)", op, re.StatusCode)
	}
	return fmt.Errorf("%w: %s: %v", ErrKMSUnavailable, op, err)
}

// maintain keeps the KEK usable until ctx ends: it logs in (or looks the
// token up) and makes sure the Transit key exists, retrying with backoff
// while Vault does not answer, then renews the token while Vault allows
// and logs in again when it will not.
func (k *VaultKEK) maintain(ctx context.Context, secret *api.Secret) {
	defer close(k.done)
	backoff := time.Second
	for ctx.Err() == nil {
		started := time.Now()
		var err error
		if secret == nil {
			secret, err = k.login(ctx)
		}
		if err == nil && !k.keyReady.Load() {
			if err = k.ensureKey(ctx); err == nil {
				k.log.Info("Vault answers: the KEK is available")
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			k.log.Warn("Vault: KEK unavailable, retrying", "retry_in", backoff, "err", err)
			if !sleepCtx(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, time.Minute)
			secret = nil
			continue
		}
		backoff = time.Second
		k.watch(ctx, secret)
		secret = nil
		// A token at the end of its life answers every lookup with a
		// shorter TTL: do not spin on it.
		if time.Since(started) < time.Second && !sleepCtx(ctx, time.Second) {
			return
		}
	}
}

// watch renews the token while it is renewable and returns when it no
// longer can be (its max TTL is near, or renewal failed), or, for a token
// that does not renew, at two thirds of its life. A token without a TTL
// needs nothing until ctx ends.
func (k *VaultKEK) watch(ctx context.Context, secret *api.Secret) {
	ttl := time.Duration(secret.Auth.LeaseDuration) * time.Second
	switch {
	case ttl == 0:
		<-ctx.Done()
		return
	case !secret.Auth.Renewable:
		if k.auth.method() == AuthToken {
			k.log.Warn("VAULT_TOKEN is not renewable: the KEK stops working when it expires; use a renewable token or a login method (approle, kubernetes)", "expires_in", ttl)
		}
		sleepCtx(ctx, ttl*2/3)
		return
	}
	w, err := k.client.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: secret})
	if err != nil {
		k.log.Warn("Vault token renewal could not start", "err", err)
		sleepCtx(ctx, ttl*2/3)
		return
	}
	go w.Start()
	defer w.Stop()
	// The watcher renews at two thirds of each lease. Once a renewal comes
	// back shorter than the lease before it, the token is near its max
	// TTL: a login method logs in again at half of what is left rather
	// than trust the last seconds (Vault rounds leases to the second).
	relogin := time.NewTimer(ttl * 5 / 6)
	defer relogin.Stop()
	lease := ttl
	for {
		select {
		case <-ctx.Done():
			return
		case <-relogin.C:
			if k.auth.method() != AuthToken {
				k.log.Info("Vault token near its max TTL: logging in again")
				return
			}
		case err := <-w.DoneCh():
			if err != nil {
				k.log.Warn("Vault token renewal failed: logging in again", "err", err)
			} else if k.auth.method() == AuthToken {
				k.log.Error("VAULT_TOKEN reached its max TTL and cannot be renewed: the KEK stops working when it expires; use a login method (approle, kubernetes)")
			} else {
				k.log.Info("Vault token at the end of its life: logging in again")
			}
			return
		case r := <-w.RenewCh():
			if r.Secret == nil || r.Secret.Auth == nil {
				continue
			}
			renewed := time.Duration(r.Secret.Auth.LeaseDuration) * time.Second
			k.setExpiry(renewed)
			k.log.Debug("Vault token renewed", "ttl", renewed)
			relogin.Stop()
			if renewed < lease {
				relogin.Reset(renewed / 2)
			} else {
				relogin.Reset(renewed * 5 / 6)
			}
			lease = renewed
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
