package pgstore

import (
	"context"
	"errors"
	"net/url"
	"strconv"
	"sync"
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

// TestTwoNodesOneDatabase: read-modify-writes from two stores on one
// database (two nodes) lose nothing: the write lock orders them.
func TestTwoNodesOneDatabase(t *testing.T) {
	url := pgtest.Database(t)
	var nodes [2]*Store
	for i := range nodes {
		s, err := Open(context.Background(), url, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		nodes[i] = s
	}
	const workers, each = 8, 25
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				err := nodes[w%2].Update(context.Background(), false, func(txn storage.Txn) error {
					n := 0
					if item, err := txn.Get([]byte("counter")); err == nil {
						v, _ := item.ValueCopy(nil)
						n, _ = strconv.Atoi(string(v))
					} else if !errors.Is(err, storage.ErrNotFound) {
						return err
					}
					return txn.Set([]byte("counter"), []byte(strconv.Itoa(n+1)))
				})
				if err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	nodes[0].View(func(txn storage.Txn) error {
		item, err := txn.Get([]byte("counter"))
		if err != nil {
			t.Fatal(err)
		}
		v, _ := item.ValueCopy(nil)
		if string(v) != strconv.Itoa(workers*each) {
			t.Fatalf("counter = %s, want %d", v, workers*each)
		}
		return nil
	})
}

// TestRefused: a database that does not exist is refused (a node should
// not wait for it); a server that does not answer is only unavailable.
func TestRefused(t *testing.T) {
	u, err := url.Parse(pgtest.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/no_such_database_here"
	_, err = Open(context.Background(), u.String(), Options{})
	if err == nil || !Refused(err) {
		t.Fatalf("a missing database: %v (refused %v)", err, Refused(err))
	}
	_, err = Open(context.Background(), "postgres://postgres@127.0.0.1:1/x?sslmode=disable&connect_timeout=2", Options{})
	if err == nil || Refused(err) || !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("no server: %v (refused %v)", err, Refused(err))
	}
}
