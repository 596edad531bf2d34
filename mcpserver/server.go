// Package mcpserver is agentvault's Model Context Protocol server: the
// tools an AI agent uses to find and read records and to reveal values
// under its grants, over any MCP transport.
//
// What it guarantees: nothing beyond what the vault allows. Every tool is
// a call to a Backend that acts as the caller (in the server: the vault
// itself, for the principal of the bearer token; in `agentvault mcp`: the
// HTTP API, with the agent's token), so grants, approvals and the audit
// log apply exactly as over HTTP, and each call's audit entry says it came
// through MCP and from which client. Refusals come back as tool errors
// carrying the API's error code; no internal detail, value or foreign
// token appears in them.
package mcpserver

import (
	"context"
	"errors"
	"fmt"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentvault/agentvault/vault"
)

// Backend is what the tools need, acting as one caller.
type Backend interface {
	WhoAmI(ctx context.Context) (*Identity, error)
	Collections(ctx context.Context, purpose string) ([]vault.Collection, error)
	Collection(ctx context.Context, name, purpose string) (*vault.Collection, error)
	Record(ctx context.Context, collection, id, purpose string) (*vault.Record, error)
	Records(ctx context.Context, collection, purpose string, limit int, after string) ([]vault.Record, string, error)
	Search(ctx context.Context, collection string, req vault.SearchRequest) ([]vault.Record, string, error)
	Detokenize(ctx context.Context, req vault.DetokenizeRequest) ([]vault.DetokenizeResult, error)
	Approval(ctx context.Context, id string) (*vault.Approval, error)
	Redact(ctx context.Context, req vault.RedactRequest) (*vault.RedactResult, error)
	Restore(ctx context.Context, req vault.TextRestoreRequest) (*vault.TextRestoreResult, error)
}

// Identity is who the caller is.
type Identity struct {
	ID    string       `json:"id"`
	Name  string       `json:"name"`
	Roles []vault.Role `json:"roles"`
}

// CodedError is an error answered by the HTTP API, with its code and
// message; a tool error shows both. Other errors show only "internal".
type CodedError interface {
	error
	ErrorCode() string
	ErrorMessage() string
}

// BackendFor returns the backend acting for the caller of one tool call,
// or an error (the caller's token no longer works) that ends the call.
type BackendFor func(ctx context.Context, req *mcp.CallToolRequest) (Backend, error)

// Caller is the MCP client of a call, from the initialize handshake, for
// the audit log.
func Caller(req *mcp.CallToolRequest) string {
	if req == nil || req.Session == nil {
		return ""
	}
	p := req.Session.InitializeParams()
	if p == nil || p.ClientInfo == nil {
		return ""
	}
	return p.ClientInfo.Name + "/" + p.ClientInfo.Version
}

const instructions = `agentvault is a data privacy vault. Sensitive fields of records are stored as tokens (for example tok_..., dtk_..., or a card-shaped number that is not a real card). You see only the collections, records and fields your grants name, for the purpose you give; everything else does not exist for you. Give the same purpose, the task you are doing, on every call.

To read a value behind a token, call detokenize with the tokens and your purpose. Each token answers ok (value), masked, denied (with the reason: no grant, wrong purpose, record outside the grant, grant ended), not_found, or pending_approval: a person must approve first. Then tell the user an approval is pending, poll approval_status with the approval id until it is approved (or denied, or expired), and call detokenize again with the same tokens, purpose and the approval_id: it reveals once, within a short window. Never guess values; never ask for a token you were not given.`

// NewServer builds the MCP server with agentvault's tools.
func NewServer(backend BackendFor, version string) *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "agentvault", Title: "agentvault data privacy vault", Version: version}, &mcp.ServerOptions{Instructions: instructions})
	addTools(s, backend)
	return s
}

// toolError is a refused call as the tool error a model reads: the API's
// error code, a colon, and its message ("collection_not_found: no
// collection \"hr\""). Anything that is not a domain refusal reads as
// "internal" or "unavailable", without detail.
func toolError(err error) error {
	code, msg := "internal", "the vault could not answer; try again later"
	var ce CodedError
	var ve *vault.Error
	switch {
	case errors.As(err, &ve):
		code, msg = ve.Code, ve.Message
	case errors.As(err, &ce):
		code, msg = ce.ErrorCode(), ce.ErrorMessage()
	case errors.Is(err, vault.ErrUnavailable):
		code, msg = "unavailable", "the vault is unavailable; try again later"
	}
	return fmt.Errorf("%s: %s", code, msg)
}
