// Package pgtest gives tests a fresh database on a real PostgreSQL server.
//
// scripts/test.sh starts a throwaway cluster (scripts/pg.sh) and exports
// AGENTVAULT_POSTGRES_URL, the URL of its administrative database. Without
// it, tests that need PostgreSQL skip, unless AGENTVAULT_REQUIRE_POSTGRES=1
// or CI is set, where they fail: the README's test command never skips
// them.
package pgtest

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/agentvault/agentvault/internal/vaulttest"
)

var seq atomic.Int64

// Available reports whether a server is configured.
func Available() bool { return os.Getenv("AGENTVAULT_POSTGRES_URL") != "" }

// Database creates an empty database for the test, drops it when the test
// ends, and returns its URL.
func Database(t testing.TB) string {
	t.Helper()
	admin := os.Getenv("AGENTVAULT_POSTGRES_URL")
	if admin == "" {
		vaulttest.Missing(t, "AGENTVAULT_REQUIRE_POSTGRES", "AGENTVAULT_POSTGRES_URL is not set: no PostgreSQL server; scripts/test.sh starts one and runs this test")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("connect to PostgreSQL: %v", err)
	}
	defer conn.Close(ctx)
	name := fmt.Sprintf("av_%d_%d_%d", os.Getpid(), time.Now().UnixNano()%1e9, seq.Add(1))
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, admin)
		if err != nil {
			return
		}
		defer conn.Close(ctx)
		conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}
