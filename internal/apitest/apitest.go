// Package apitest runs agentvault's real HTTP handler over a real Badger
// store and a local development KEK, for tests of the API and of tools
// that drive it.
package apitest

import (
	"context"
	"encoding/pem"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentvault/agentvault/httpapi"
	"github.com/agentvault/agentvault/internal/pgtest"
	"github.com/agentvault/agentvault/keys"
	"github.com/agentvault/agentvault/storage"
	"github.com/agentvault/agentvault/storage/badgerstore"
	"github.com/agentvault/agentvault/storage/pgstore"
	"github.com/agentvault/agentvault/vault"
)

// AdminToken is the bootstrap admin's token on every test server.
const AdminToken = "test-admin-token-0123456789"

// Options tune a test server; the zero value is the defaults.
type Options struct {
	MaxBodyBytes int64        // 0: the default body limit
	Logger       *slog.Logger // nil: logs are discarded
	// KEKFile is where the development KEK is kept (created if missing);
	// empty: in the server's own temporary directory. A test that checks
	// what needs the KEK (a backup's MAC) names it.
	KEKFile string
}

// Start serves the handler over HTTP on a loopback port with a fresh data
// directory and returns its base URL. It stops when the test ends.
func Start(t testing.TB, o Options) string {
	t.Helper()
	srv := httptest.NewServer(handler(t, o))
	t.Cleanup(srv.Close)
	return srv.URL
}

// Handler is the real API handler over a fresh store, for benchmarks that
// call it without a network between.
func Handler(t testing.TB, o Options) http.Handler {
	t.Helper()
	return handler(t, o)
}

// StartTLS is Start over HTTPS; it also returns the server's certificate
// as PEM, for clients to trust.
func StartTLS(t testing.TB, o Options) (url string, certPEM []byte) {
	t.Helper()
	srv := httptest.NewTLSServer(handler(t, o))
	t.Cleanup(srv.Close)
	return srv.URL, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
}

// handler is the real API over a fresh store (Badger, or a new PostgreSQL
// database when AGENTVAULT_TEST_STORE=postgres); the store and service close
// when the test ends (after the server, whose cleanup runs first).
func handler(t testing.TB, o Options) http.Handler {
	t.Helper()
	dir := t.TempDir()
	if o.KEKFile == "" {
		o.KEKFile = filepath.Join(dir, "kek.json")
	}
	kek, err := keys.OpenLocalKEK(o.KEKFile)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	var store storage.Store
	if os.Getenv("AGENTVAULT_TEST_STORE") == "postgres" {
		store, err = pgstore.Open(context.Background(), pgtest.Database(t), pgstore.Options{})
	} else {
		store, err = badgerstore.Open(filepath.Join(dir, "db"), badgerstore.Options{Registry: reg})
	}
	if err != nil {
		t.Fatal(err)
	}
	svc, err := vault.New(vault.Config{Store: store, Keys: keys.NewManager(kek), Registry: reg, Logger: o.Logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close(); store.Close() })
	if _, err := svc.EnsureBootstrapAdmin(context.Background(), AdminToken); err != nil {
		t.Fatal(err)
	}
	return httpapi.New(httpapi.Config{Service: svc, Registry: reg, MaxBodyBytes: o.MaxBodyBytes, Logger: o.Logger})
}
