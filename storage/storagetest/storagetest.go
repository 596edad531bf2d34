// Package storagetest holds the storage contract's tests, which every
// implementation runs against itself: the domain relies on exactly these
// behaviours.
package storagetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/agentvault/agentvault/storage"
)

// Run runs the contract's tests on stores made by open (a fresh, empty
// store each time).
func Run(t *testing.T, open func(t *testing.T) storage.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s storage.Store)
	}{
		{"get set delete", testGetSetDelete},
		{"iteration order and prefixes", testIteration},
		{"a transaction sees its own writes", testOwnWrites},
		{"discard and failures store nothing", testDiscard},
		{"a snapshot does not move", testSnapshot},
		{"many keys in one transaction", testLarge},
		{"concurrent updates lose nothing", testConcurrentUpdates},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() { s.Close() })
			tc.fn(t, s)
		})
	}
}

func update(t *testing.T, s storage.Store, fn func(txn storage.Txn) error) {
	t.Helper()
	if err := s.Update(context.Background(), false, fn); err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, s storage.Store, key string) (string, bool) {
	t.Helper()
	var v []byte
	found := true
	err := s.View(func(txn storage.Txn) error {
		item, err := txn.Get([]byte(key))
		if errors.Is(err, storage.ErrNotFound) {
			found = false
			return nil
		}
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return string(v), found
}

func keys(t *testing.T, txn storage.Txn, o storage.IterOptions, seek []byte) []string {
	t.Helper()
	it := txn.NewIterator(o)
	defer it.Close()
	var out []string
	if seek != nil {
		it.Seek(seek)
	} else {
		it.Rewind()
	}
	for ; it.Valid(); it.Next() {
		k := string(it.Item().Key())
		var v []byte
		if err := it.Item().Value(func(b []byte) error { v = slices.Clone(b); return nil }); err != nil {
			t.Fatal(err)
		}
		if string(v) != "v:"+k {
			t.Fatalf("key %q holds %q", k, v)
		}
		out = append(out, k)
	}
	return out
}

func testGetSetDelete(t *testing.T, s storage.Store) {
	if _, ok := get(t, s, "a"); ok {
		t.Fatal("an empty store holds a")
	}
	update(t, s, func(txn storage.Txn) error { return txn.Set([]byte("a"), []byte("1")) })
	if v, ok := get(t, s, "a"); !ok || v != "1" {
		t.Fatalf("a = %q, %v", v, ok)
	}
	update(t, s, func(txn storage.Txn) error { return txn.Set([]byte("a"), []byte("2")) })
	if v, _ := get(t, s, "a"); v != "2" {
		t.Fatalf("a = %q after overwrite", v)
	}
	update(t, s, func(txn storage.Txn) error { return txn.Set([]byte("empty"), []byte{}) })
	if v, ok := get(t, s, "empty"); !ok || v != "" {
		t.Fatalf("an empty value: %q, %v", v, ok)
	}
	update(t, s, func(txn storage.Txn) error { return txn.Set([]byte("nil"), nil) })
	if v, ok := get(t, s, "nil"); !ok || v != "" {
		t.Fatalf("a nil value: %q, %v", v, ok)
	}
	update(t, s, func(txn storage.Txn) error { return txn.Delete([]byte("a")) })
	if _, ok := get(t, s, "a"); ok {
		t.Fatal("a survives its deletion")
	}
	err := s.View(func(txn storage.Txn) error { return txn.Set([]byte("x"), []byte("y")) })
	if err == nil {
		t.Fatal("a read-only transaction took a write")
	}
}

func testIteration(t *testing.T, s storage.Store) {
	all := []string{"a/1", "a/2", "a/3", "ab", "a\xff", "a\xff\xff", "b/1", "\xff", "\xff\xff"}
	update(t, s, func(txn storage.Txn) error {
		for _, k := range slices.Backward(all) {
			if err := txn.Set([]byte(k), []byte("v:"+k)); err != nil {
				return err
			}
		}
		return nil
	})
	s.View(func(txn storage.Txn) error {
		for _, tc := range []struct {
			o    storage.IterOptions
			seek string
			want []string
		}{
			{storage.IterOptions{}, "", all},
			{storage.IterOptions{Prefix: []byte("a/")}, "", []string{"a/1", "a/2", "a/3"}},
			{storage.IterOptions{Prefix: []byte("a/"), PrefetchValues: true, PrefetchSize: 1}, "", []string{"a/1", "a/2", "a/3"}},
			{storage.IterOptions{Prefix: []byte("a/"), Reverse: true}, "", []string{"a/3", "a/2", "a/1"}},
			{storage.IterOptions{Prefix: []byte("a/")}, "a/2", []string{"a/2", "a/3"}},
			{storage.IterOptions{Prefix: []byte("a/")}, "a/25", []string{"a/3"}},
			{storage.IterOptions{Prefix: []byte("a/"), Reverse: true}, "a/25", []string{"a/2", "a/1"}},
			{storage.IterOptions{Prefix: []byte("a\xff")}, "", []string{"a\xff", "a\xff\xff"}},
			{storage.IterOptions{Prefix: []byte("\xff")}, "", []string{"\xff", "\xff\xff"}},
			{storage.IterOptions{Prefix: []byte("\xff"), Reverse: true}, "", []string{"\xff\xff", "\xff"}},
			{storage.IterOptions{Reverse: true}, "", slices.Collect(slices.Values(reversed(all)))},
			{storage.IterOptions{Prefix: []byte("c")}, "", nil},
		} {
			var seek []byte
			if tc.seek != "" {
				seek = []byte(tc.seek)
			}
			if got := keys(t, txn, tc.o, seek); !slices.Equal(got, tc.want) {
				t.Errorf("prefix %q reverse %v seek %q: %q, want %q", tc.o.Prefix, tc.o.Reverse, tc.seek, got, tc.want)
			}
		}
		it := txn.NewIterator(storage.IterOptions{})
		defer it.Close()
		it.Seek([]byte("a/"))
		if !it.ValidForPrefix([]byte("a/")) || it.ValidForPrefix([]byte("b")) {
			t.Error("ValidForPrefix")
		}
		return nil
	})
}

func reversed(s []string) []string {
	out := slices.Clone(s)
	slices.Reverse(out)
	return out
}

func testOwnWrites(t *testing.T, s storage.Store) {
	update(t, s, func(txn storage.Txn) error {
		for _, k := range []string{"k/1", "k/3"} {
			txn.Set([]byte(k), []byte("v:"+k))
		}
		return nil
	})
	update(t, s, func(txn storage.Txn) error {
		txn.Set([]byte("k/2"), []byte("v:k/2"))
		txn.Delete([]byte("k/3"))
		if _, err := txn.Get([]byte("k/3")); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("a deleted key reads back: %v", err)
		}
		item, err := txn.Get([]byte("k/2"))
		if err != nil {
			return err
		}
		if v, _ := item.ValueCopy(nil); string(v) != "v:k/2" {
			t.Errorf("k/2 = %q in its own transaction", v)
		}
		if got := keys(t, txn, storage.IterOptions{Prefix: []byte("k/")}, nil); !slices.Equal(got, []string{"k/1", "k/2"}) {
			t.Errorf("iteration in the writing transaction: %q", got)
		}
		// Writes after an iterator, then a point read, then another
		// iterator: each sees everything before it.
		txn.Set([]byte("k/4"), []byte("v:k/4"))
		if got := keys(t, txn, storage.IterOptions{Prefix: []byte("k/"), Reverse: true}, nil); !slices.Equal(got, []string{"k/4", "k/2", "k/1"}) {
			t.Errorf("second iteration: %q", got)
		}
		return nil
	})
	if _, ok := get(t, s, "k/3"); ok {
		t.Fatal("k/3 survives")
	}
	if v, _ := get(t, s, "k/4"); v != "v:k/4" {
		t.Fatalf("k/4 = %q", v)
	}
}

func testDiscard(t *testing.T, s storage.Store) {
	w := s.NewWriteTxn()
	w.Set([]byte("discarded"), []byte("x"))
	w.Discard()
	if _, ok := get(t, s, "discarded"); ok {
		t.Fatal("a discarded write landed")
	}
	boom := errors.New("boom")
	if err := s.Update(context.Background(), false, func(txn storage.Txn) error {
		txn.Set([]byte("failed"), []byte("x"))
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("Update returned %v, want fn's error", err)
	}
	if _, ok := get(t, s, "failed"); ok {
		t.Fatal("a failed transaction's write landed")
	}
	w = s.NewWriteTxn()
	w.Set([]byte("committed"), []byte("v"))
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitDurable(); err != nil {
		t.Fatal(err)
	}
	if v, _ := get(t, s, "committed"); v != "v" {
		t.Fatalf("committed = %q", v)
	}
}

func testSnapshot(t *testing.T, s storage.Store) {
	update(t, s, func(txn storage.Txn) error { return txn.Set([]byte("snap"), []byte("before")) })
	started, release := make(chan struct{}), make(chan struct{})
	var seen string
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.View(func(txn storage.Txn) error {
			txn.Get([]byte("snap")) // the snapshot is taken by now
			close(started)
			<-release
			item, err := txn.Get([]byte("snap"))
			if err == nil {
				v, _ := item.ValueCopy(nil)
				seen = string(v)
			}
			return nil
		})
	}()
	<-started
	update(t, s, func(txn storage.Txn) error { return txn.Set([]byte("snap"), []byte("after")) })
	close(release)
	wg.Wait()
	if seen != "before" {
		t.Fatalf("a read transaction saw %q written after it began", seen)
	}
}

func testLarge(t *testing.T, s storage.Store) {
	const n = 5000
	update(t, s, func(txn storage.Txn) error {
		for i := range n {
			k := fmt.Sprintf("big/%06d", i)
			if err := txn.Set([]byte(k), bytes.Repeat([]byte{byte(i)}, 100)); err != nil {
				return err
			}
		}
		return nil
	})
	count := 0
	s.View(func(txn storage.Txn) error {
		it := txn.NewIterator(storage.IterOptions{Prefix: []byte("big/")})
		defer it.Close()
		prev := ""
		for it.Rewind(); it.Valid(); it.Next() {
			k := string(it.Item().Key())
			if k <= prev {
				t.Fatalf("%q after %q", k, prev)
			}
			prev = k
			count++
		}
		return nil
	})
	if count != n {
		t.Fatalf("%d keys, want %d", count, n)
	}
}

// testConcurrentUpdates: read-modify-write transactions from many
// goroutines on one counter; none is lost (Update reruns a transaction
// that lost a race).
func testConcurrentUpdates(t *testing.T, s storage.Store) {
	const workers, each = 8, 10
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				err := s.Update(context.Background(), false, func(txn storage.Txn) error {
					n := 0
					if item, err := txn.Get([]byte("counter")); err == nil {
						v, _ := item.ValueCopy(nil)
						fmt.Sscan(string(v), &n)
					} else if !errors.Is(err, storage.ErrNotFound) {
						return err
					}
					return txn.Set([]byte("counter"), fmt.Appendf(nil, "%d", n+1))
				})
				if err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if v, _ := get(t, s, "counter"); v != fmt.Sprint(workers*each) {
		t.Fatalf("counter = %s, want %d", v, workers*each)
	}
}
