package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentvault/agentvault/mcpserver"
	"github.com/agentvault/agentvault/vault"
)

// mcpHandler serves MCP's streamable HTTP transport at /mcp for agents,
// authenticated with the same bearer tokens as the API. Every tool call
// acts as the token's principal, through the vault's own checks, and is
// audited with via "mcp" and the client's name and version. The token is
// checked on every HTTP request of a session, so a revoked token stops at
// its next call.
func (s *Server) mcpHandler() http.Handler {
	server := mcpserver.NewServer(s.mcpBackend, "1")
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, &mcp.StreamableHTTPOptions{
		Logger: s.log.With("component", "mcp"), SessionTimeout: 30 * time.Minute,
	})
	// s.auth has checked the token and the role; verify hands the
	// principal on as TokenInfo, and the transport binds a session to the
	// user its first request authenticated as (TokenInfo.UserID), so a
	// session id alone is no way in for another principal.
	verify := func(_ context.Context, _ string, r *http.Request) (*auth.TokenInfo, error) {
		p := principal(r)
		if p == nil {
			return nil, auth.ErrInvalidToken
		}
		return &auth.TokenInfo{UserID: p.ID, Expiration: time.Now().Add(24 * time.Hour), Extra: map[string]any{"remote": r.RemoteAddr}}, nil
	}
	return s.auth(auth.RequireBearerToken(verify, nil)(h).ServeHTTP, vault.RoleAgent)
}

// mcpBackend is the vault acting for one tool call's caller.
func (s *Server) mcpBackend(ctx context.Context, req *mcp.CallToolRequest) (mcpserver.Backend, error) {
	ti := req.Extra.TokenInfo
	if ti == nil {
		return nil, &vault.Error{Kind: vault.ErrUnauthenticated, Code: "unauthenticated", Message: "no token"}
	}
	p := s.svc.Principal(ti.UserID)
	if p == nil || !p.Active() || !p.Has(vault.RoleAgent) {
		return nil, &vault.Error{Kind: vault.ErrUnauthenticated, Code: "unauthenticated", Message: "the token no longer works"}
	}
	remote, _ := ti.Extra["remote"].(string)
	return &serviceBackend{svc: s.svc, meta: vault.RequestMeta{
		Actor: p, RequestID: "mcp-" + uuid.NewString(), RemoteAddr: remote, Via: "mcp", Client: clientName(mcpserver.Caller(req)),
	}}, nil
}

// serviceBackend answers tools from the vault, as meta's principal, with
// the same service calls (and so the same checks and audit entries) as
// the HTTP routes.
type serviceBackend struct {
	svc  *vault.Service
	meta vault.RequestMeta
}

func (b *serviceBackend) WhoAmI(context.Context) (*mcpserver.Identity, error) {
	return &mcpserver.Identity{ID: b.meta.Actor.ID, Name: b.meta.Actor.Name, Roles: b.meta.Actor.Roles}, nil
}

func (b *serviceBackend) Collections(ctx context.Context, purpose string) ([]vault.Collection, error) {
	return b.svc.VisibleCollections(ctx, b.meta.Actor, purpose)
}

func (b *serviceBackend) Collection(ctx context.Context, name, purpose string) (*vault.Collection, error) {
	return b.svc.GetCollection(ctx, b.meta.Actor, name, purpose)
}

func (b *serviceBackend) Record(ctx context.Context, collection, id, purpose string) (*vault.Record, error) {
	return b.svc.GetRecord(ctx, b.meta, collection, id, purpose)
}

func (b *serviceBackend) Records(ctx context.Context, collection, purpose string, limit int, after string) ([]vault.Record, string, error) {
	return b.svc.ListRecords(ctx, b.meta, collection, purpose, limit, after)
}

func (b *serviceBackend) Search(ctx context.Context, collection string, req vault.SearchRequest) ([]vault.Record, string, error) {
	return b.svc.SearchRecords(ctx, b.meta, collection, req)
}

func (b *serviceBackend) Detokenize(ctx context.Context, req vault.DetokenizeRequest) ([]vault.DetokenizeResult, error) {
	return b.svc.Detokenize(ctx, b.meta, req)
}

func (b *serviceBackend) Approval(ctx context.Context, id string) (*vault.Approval, error) {
	return b.svc.GetApproval(ctx, b.meta.Actor, id)
}

func (b *serviceBackend) Redact(ctx context.Context, req vault.RedactRequest) (*vault.RedactResult, error) {
	return b.svc.Redact(ctx, b.meta, req)
}

func (b *serviceBackend) Restore(ctx context.Context, req vault.TextRestoreRequest) (*vault.TextRestoreResult, error) {
	return b.svc.RestoreText(ctx, b.meta, req)
}
