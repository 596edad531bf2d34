package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentvault/agentvault/httpapi"
	"github.com/agentvault/agentvault/mcpserver"
	"github.com/agentvault/agentvault/vault"
)

const mcpUsage = `usage: agentvault mcp
        an MCP server over stdio for a local agent host (Claude Desktop, an
        IDE agent, an agent framework): it calls the agentvault server at
        AGENTVAULT_URL with the agent's API token in AGENTVAULT_TOKEN (and
        AGENTVAULT_CACERT, AGENTVAULT_CLIENT_CERT, AGENTVAULT_CLIENT_KEY for
        TLS), so the server enforces every grant, approval and audit entry.
        A missing or wrong token fails at start.
`

func mcpCmd(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mcp", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, mcpUsage) }
	c := clientFlags(fs)
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		fmt.Fprint(stderr, mcpUsage)
		return errUsage
	}
	if c.token == "" {
		return errors.New("no token: set AGENTVAULT_TOKEN to the agent's API token")
	}
	if err := c.setupTLS(); err != nil {
		return err
	}
	var me mcpserver.Identity
	if err := c.call("GET", "/v1/me", nil, &me); err != nil {
		return fmt.Errorf("AGENTVAULT_TOKEN does not work at %s: %w", c.server, err)
	}
	fmt.Fprintf(stderr, "agentvault mcp: serving tools over stdio as %s (%s) at %s\n", me.Name, me.ID, c.server)
	server := mcpserver.NewServer(func(_ context.Context, req *mcp.CallToolRequest) (mcpserver.Backend, error) {
		cc := *c
		cc.header = http.Header{httpapi.HeaderVia: {"mcp"}, httpapi.HeaderClient: {mcpserver.Caller(req)}}
		return &apiBackend{c: &cc}, nil
	}, "1")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return server.Run(ctx, &mcp.IOTransport{Reader: io.NopCloser(stdin), Writer: nopWriteCloser{stdout}})
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// apiBackend answers the MCP tools from the agentvault HTTP API.
type apiBackend struct{ c *client }

func (b *apiBackend) WhoAmI(context.Context) (*mcpserver.Identity, error) {
	var out mcpserver.Identity
	return &out, b.c.call("GET", "/v1/me", nil, &out)
}

func withPurpose(path, purpose string) string {
	if purpose == "" {
		return path
	}
	return path + "?purpose=" + url.QueryEscape(purpose)
}

func (b *apiBackend) Collections(_ context.Context, purpose string) ([]vault.Collection, error) {
	var out struct{ Collections []vault.Collection }
	return out.Collections, b.c.call("GET", withPurpose("/v1/collections", purpose), nil, &out)
}

func (b *apiBackend) Collection(_ context.Context, name, purpose string) (*vault.Collection, error) {
	var out vault.Collection
	if err := b.c.call("GET", withPurpose("/v1/collections/"+url.PathEscape(name), purpose), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func (b *apiBackend) Record(_ context.Context, collection, id, purpose string) (*vault.Record, error) {
	var out vault.Record
	if err := b.c.call("GET", withPurpose("/v1/collections/"+url.PathEscape(collection)+"/records/"+url.PathEscape(id), purpose), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func (b *apiBackend) Records(_ context.Context, collection, purpose string, limit int, after string) ([]vault.Record, string, error) {
	q := url.Values{}
	for k, v := range map[string]string{"purpose": purpose, "after": after} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out struct {
		Records []vault.Record
		Next    string
	}
	err := b.c.call("GET", "/v1/collections/"+url.PathEscape(collection)+"/records?"+q.Encode(), nil, &out)
	return out.Records, out.Next, err
}

func (b *apiBackend) Search(_ context.Context, collection string, req vault.SearchRequest) ([]vault.Record, string, error) {
	var out struct {
		Records []vault.Record
		Next    string
	}
	err := b.c.call("POST", "/v1/collections/"+url.PathEscape(collection)+"/records/search", req, &out)
	return out.Records, out.Next, err
}

func (b *apiBackend) Detokenize(_ context.Context, req vault.DetokenizeRequest) ([]vault.DetokenizeResult, error) {
	var out struct{ Results []vault.DetokenizeResult }
	return out.Results, b.c.call("POST", "/v1/detokenize", req, &out)
}

func (b *apiBackend) Approval(_ context.Context, id string) (*vault.Approval, error) {
	var out vault.Approval
	if err := b.c.call("GET", "/v1/approvals/"+url.PathEscape(id), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func (b *apiBackend) Redact(_ context.Context, req vault.RedactRequest) (*vault.RedactResult, error) {
	var out vault.RedactResult
	if err := b.c.call("POST", "/v1/redact", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func (b *apiBackend) Restore(_ context.Context, req vault.TextRestoreRequest) (*vault.TextRestoreResult, error) {
	var out vault.TextRestoreResult
	if err := b.c.call("POST", "/v1/restore", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
