package pgstore

import (
	"context"
	"testing"

	"github.com/agentvault/agentvault/internal/pgtest"
	"github.com/agentvault/agentvault/storage"
	"github.com/agentvault/agentvault/storage/storagetest"
)

func TestContract(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Store {
		s, err := Open(context.Background(), pgtest.Database(t), Options{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// TestMigrateConcurrently: nodes starting at once on an empty database
// each migrate it or find it migrated; none fails.
func TestMigrateConcurrently(t *testing.T) {
	url := pgtest.Database(t)
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			s, err := Open(context.Background(), url, Options{})
			if err == nil {
				s.Close()
			}
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
