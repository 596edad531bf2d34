package vault

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/agentvault/agentvault/storage"
)

// Role is what a principal may do.
type Role string

// Roles, per the HTTP contract.
const (
	RoleAdmin    Role = "admin"
	RoleWriter   Role = "writer"
	RoleAgent    Role = "agent"
	RoleApprover Role = "approver"
	RoleAuditor  Role = "auditor"
	RoleOperator Role = "operator"
)

// AllRoles lists every role.
var AllRoles = []Role{RoleAdmin, RoleWriter, RoleAgent, RoleApprover, RoleAuditor, RoleOperator}

// Principal is a person or program holding an API token. The token itself
// is never stored: only its SHA-256, which is enough because tokens carry
// 256 random bits.
type Principal struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Roles     []Role     `json:"roles"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	TokenHash []byte     `json:"-"`
}

// storedPrincipal is the on-disk form, which does keep the token hash.
type storedPrincipal struct {
	Principal
	TokenHash []byte `json:"token_hash"`
}

// Has reports whether p holds role r.
func (p *Principal) Has(r Role) bool { return slices.Contains(p.Roles, r) }

// Active reports whether p's token still works.
func (p *Principal) Active() bool { return p.RevokedAt == nil }

// BootstrapAdminName names the principal that AGENTVAULT_ADMIN_TOKEN (or
// the first-start generated token) authenticates.
const BootstrapAdminName = "bootstrap-admin"

const apiTokenPrefix = "avt_"

var principalName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$`)

func newAPIToken() string {
	var b [32]byte
	rand.Read(b[:])
	return apiTokenPrefix + base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:])
}

func hashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

func principalKey(id string) []byte { return []byte("p/" + id) }
func tokenHashKey(h []byte) []byte  { return []byte("ph/" + hex.EncodeToString(h)) }

// CreatePrincipal adds a principal and returns it with its API token, which
// is shown this once and never again.
func (s *Service) CreatePrincipal(ctx context.Context, meta RequestMeta, name string, roles []Role) (*Principal, string, error) {
	if !principalName.MatchString(name) {
		return nil, "", invalid("invalid_name", "name must be 1-128 characters: letters, digits, and _ . @ -, starting with a letter or digit")
	}
	if len(roles) == 0 {
		return nil, "", invalid("invalid_roles", "roles must name at least one of %v", AllRoles)
	}
	seen := map[Role]bool{}
	for _, r := range roles {
		if !slices.Contains(AllRoles, r) {
			return nil, "", invalid("invalid_roles", "unknown role %q; roles are %v", r, AllRoles)
		}
		if seen[r] {
			return nil, "", invalid("invalid_roles", "role %q is listed twice", r)
		}
		seen[r] = true
	}
	token := newAPIToken()
	p := &Principal{ID: uuid.NewString(), Name: name, Roles: roles, CreatedAt: s.now(), TokenHash: hashToken(token)}
	e := s.newEntry(meta, "principal.create")
	e.Target = p.ID
	e.Reason = fmt.Sprintf("name=%s roles=%v", p.Name, p.Roles)
	if err := s.putPrincipal(p, nil, e); err != nil {
		return nil, "", err
	}
	s.log.Info("principal created", "principal_id", p.ID, "name", p.Name, "roles", p.Roles, "actor", actorID(meta.Actor))
	return p, token, nil
}

func actorID(p *Principal) string {
	if p == nil {
		return "system"
	}
	return p.ID
}

// putPrincipal stores p and its token-hash index with its audit entry,
// removing oldHash's index if the token changed, then updates the
// in-memory table.
func (s *Service) putPrincipal(p *Principal, oldHash []byte, e *AuditEntry) error {
	b, err := json.Marshal(storedPrincipal{Principal: *p, TokenHash: p.TokenHash})
	if err != nil {
		return err
	}
	err = s.writer.apply(&mutation{entry: e, size: len(b) + 256, prepare: func(txn storage.Txn) error {
		// Two principals never share a token hash: a new principal or a
		// new token must not find its hash taken.
		_, err := txn.Get(principalKey(p.ID))
		newHash := errors.Is(err, storage.ErrNotFound) || (oldHash != nil && !slices.Equal(oldHash, p.TokenHash))
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return err
		}
		if !newHash {
			return s.setPrincipal(txn, p, b)
		}
		switch item, err := txn.Get(tokenHashKey(p.TokenHash)); {
		case errors.Is(err, storage.ErrNotFound):
		case err != nil:
			return err
		default:
			if err := item.Value(func(id []byte) error {
				if string(id) != p.ID {
					return reject(conflict("token_taken", "the token belongs to another principal"))
				}
				return nil
			}); err != nil {
				return err
			}
		}
		if oldHash != nil && !slices.Equal(oldHash, p.TokenHash) {
			if err := txn.Delete(tokenHashKey(oldHash)); err != nil {
				return err
			}
		}
		return s.setPrincipal(txn, p, b)
	}})
	if err != nil {
		return fmt.Errorf("store principal: %w", err)
	}
	s.pmu.Lock()
	if oldHash != nil {
		delete(s.byHash, string(oldHash))
	}
	cp := *p
	s.byID[p.ID] = &cp
	s.byHash[string(p.TokenHash)] = &cp
	s.pmu.Unlock()
	return nil
}

// setPrincipal writes a principal and its token-hash index entry.
func (s *Service) setPrincipal(txn storage.Txn, p *Principal, stored []byte) error {
	if err := bumpGen(txn); err != nil {
		return err
	}
	if err := txn.Set(principalKey(p.ID), stored); err != nil {
		return err
	}
	return txn.Set(tokenHashKey(p.TokenHash), []byte(p.ID))
}

// ListPrincipals returns every principal, revoked ones included.
func (s *Service) ListPrincipals(context.Context) []*Principal {
	s.pmu.RLock()
	defer s.pmu.RUnlock()
	out := make([]*Principal, 0, len(s.byID))
	for _, p := range s.byID {
		cp := *p
		out = append(out, &cp)
	}
	slices.SortFunc(out, func(a, b *Principal) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out
}

// RevokePrincipal stops a principal's token from working, at once.
func (s *Service) RevokePrincipal(ctx context.Context, meta RequestMeta, id string) error {
	actor := meta.Actor
	s.pmu.RLock()
	p, ok := s.byID[id]
	var cp Principal
	if ok {
		cp = *p
	}
	s.pmu.RUnlock()
	if !ok {
		return notFound("principal_not_found", "no principal with id %q", id)
	}
	if actor != nil && actor.ID == id {
		return conflict("self_revoke", "a principal cannot revoke itself")
	}
	if cp.RevokedAt != nil {
		return nil
	}
	now := s.now()
	cp.RevokedAt = &now
	e := s.newEntry(meta, "principal.revoke")
	e.Target = id
	if err := s.putPrincipal(&cp, nil, e); err != nil {
		return err
	}
	s.log.Info("principal revoked", "principal_id", id, "actor", actorID(actor))
	return nil
}

// Authenticate returns the active principal whose token this is. The
// lookup is by SHA-256 of the token; the stored hash is then compared in
// constant time.
func (s *Service) Authenticate(token string) (*Principal, error) {
	if len(token) == 0 || len(token) > 256 {
		return nil, ErrUnauthenticated
	}
	h := hashToken(token)
	s.pmu.RLock()
	p, ok := s.byHash[string(h)]
	s.pmu.RUnlock()
	if !ok || subtle.ConstantTimeCompare(p.TokenHash, h) != 1 || !p.Active() {
		return nil, ErrUnauthenticated
	}
	return p, nil
}

// EnsureBootstrapAdmin makes sure an admin can sign in. With a token (from
// AGENTVAULT_ADMIN_TOKEN) the bootstrap admin's token is set to it, so a
// changed variable replaces the old token. Without one, a token is
// generated only if no active admin exists yet, and returned to be shown
// once; otherwise it returns "".
func (s *Service) EnsureBootstrapAdmin(ctx context.Context, token string) (string, error) {
	if token != "" && len(token) < 16 {
		return "", errors.New("AGENTVAULT_ADMIN_TOKEN must be at least 16 characters")
	}
	s.pmu.RLock()
	var boot *Principal
	activeAdmin := false
	for _, p := range s.byID {
		if p.Name == BootstrapAdminName && p.Active() {
			cp := *p
			boot = &cp
		}
		if p.Has(RoleAdmin) && p.Active() {
			activeAdmin = true
		}
	}
	s.pmu.RUnlock()
	generated := ""
	if token == "" {
		if activeAdmin {
			return "", nil
		}
		token = newAPIToken()
		generated = token
	}
	h := hashToken(token)
	if boot != nil && subtle.ConstantTimeCompare(boot.TokenHash, h) == 1 {
		return generated, nil
	}
	// A token never comes back: not one of a revoked principal (the
	// bootstrap admin revoked, then the same variable on the next start),
	// and not one another principal holds.
	s.pmu.RLock()
	holder, taken := s.byHash[string(h)]
	s.pmu.RUnlock()
	if taken {
		if !holder.Active() {
			return "", fmt.Errorf("AGENTVAULT_ADMIN_TOKEN is the token of principal %s (%s), which was revoked: a revoked token never works again; set a new token to create a new bootstrap admin", holder.ID, holder.Name)
		}
		return "", fmt.Errorf("AGENTVAULT_ADMIN_TOKEN is the token of principal %s (%s); give the bootstrap admin a token of its own", holder.ID, holder.Name)
	}
	if boot != nil {
		old := boot.TokenHash
		boot.TokenHash = h
		e := s.newEntry(RequestMeta{}, "principal.bootstrap_token_replaced")
		e.Target = boot.ID
		if err := s.putPrincipal(boot, old, e); err != nil {
			return "", err
		}
		s.log.Warn("bootstrap admin token replaced", "principal_id", boot.ID)
		return generated, nil
	}
	p := &Principal{ID: uuid.NewString(), Name: BootstrapAdminName, Roles: []Role{RoleAdmin}, CreatedAt: s.now(), TokenHash: h}
	e := s.newEntry(RequestMeta{}, "principal.bootstrap")
	e.Target = p.ID
	if err := s.putPrincipal(p, nil, e); err != nil {
		return "", err
	}
	s.log.Info("bootstrap admin created", "principal_id", p.ID)
	return generated, nil
}

// readPrincipals reads every principal, by id and by token hash.
func readPrincipals(txn storage.Txn, log *slog.Logger) (map[string]*Principal, map[string]*Principal, error) {
	byID, byHash := map[string]*Principal{}, map[string]*Principal{}
	it := txn.NewIterator(storage.IterOptions{Prefix: []byte("p/"), PrefetchValues: true})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		var sp storedPrincipal
		if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &sp) }); err != nil {
			return nil, nil, fmt.Errorf("load principal %s: %w", it.Item().Key(), err)
		}
		p := sp.Principal
		p.TokenHash = sp.TokenHash
		byID[p.ID] = &p
		// Databases written before hashes were kept unique may hold two
		// principals for one token; a revoked one wins, so the token
		// stays revoked whatever the order.
		if other, dup := byHash[string(p.TokenHash)]; dup {
			log.Error("two principals share one token hash; the token authenticates neither while one is revoked", "principal_id", p.ID, "other_principal_id", other.ID)
			if !other.Active() {
				continue
			}
		}
		byHash[string(p.TokenHash)] = &p
	}
	return byID, byHash, nil
}

// Principal returns a copy of the principal with this id, or nil.
func (s *Service) Principal(id string) *Principal {
	s.pmu.RLock()
	defer s.pmu.RUnlock()
	p, ok := s.byID[id]
	if !ok {
		return nil
	}
	cp := *p
	return &cp
}
