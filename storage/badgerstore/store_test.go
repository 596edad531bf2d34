package badgerstore

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/agentvault/agentvault/storage"
	"golang.org/x/sys/unix"
)

// dirtyWAL reads this process's memory map and returns the kilobytes of
// dirty (written, not yet written back) pages in each memtable
// write-ahead log (*.mem) of dir. A page an fsync has written back is
// clean.
func dirtyWAL(t *testing.T, dir string) map[string]int {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]int{}
	cur := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		switch {
		case len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":"):
			// A mapping's header line: address range, perms, offset,
			// device, inode, and a path for file mappings.
			cur = ""
			if p := fields[len(fields)-1]; len(fields) >= 6 && filepath.Dir(p) == dir && strings.HasSuffix(p, ".mem") {
				cur = filepath.Base(p)
				out[cur] += 0
			}
		case cur != "" && (fields[0] == "Private_Dirty:" || fields[0] == "Shared_Dirty:"):
			kb, _ := strconv.Atoi(fields[1])
			out[cur] += kb
		}
	}
	return out
}

// TestCheckpointSyncsSetAsideMemtables holds a checkpoint to what it
// promises before it deletes log segments: every transaction committed
// before it began is in Badger's files on disk. Badger's DB.Sync syncs
// only the current memtable's log, so the test switches memtables at the
// worst moment, right before that sync, and then looks at the page
// cache: a memtable log with dirty pages after the checkpoint holds
// committed data that a power cut would lose once its segments are gone.
func TestCheckpointSyncsSetAsideMemtables(t *testing.T) {
	if _, err := os.Stat("/proc/self/smaps"); err != nil {
		t.Fatalf("needs /proc/self/smaps (Linux): %v", err)
	}
	dir := filepath.Join(t.TempDir(), "db")
	store, err := Open(dir, Options{MemTableSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ctx := context.Background()
	big := bytes.Repeat([]byte{0xa5}, 48<<10) // under the value threshold: into the log
	switches := 0
	fill := func() {
		// Fill the current memtable, then one more write: Badger moves
		// it aside and starts a new one.
		for i := range 10 {
			if err := store.UpdateRaw(func(txn storage.Txn) error {
				txn.Set([]byte(fmt.Sprintf("fill/%d/%d/a", switches, i)), big)
				return txn.Set([]byte(fmt.Sprintf("fill/%d/%d/b", switches, i)), big)
			}); err != nil {
				t.Error(err)
			}
		}
		store.UpdateRaw(func(txn storage.Txn) error { return txn.Set([]byte("after-switch"), []byte{1}) })
		switches++
	}
	store.beforeCheckpoint.Store(&fill)
	defer store.beforeCheckpoint.Store(nil)
	for i := range 10 {
		if err := store.Update(ctx, false, func(txn storage.Txn) error {
			return txn.Set([]byte(fmt.Sprintf("acked/%d", i)), bytes.Repeat([]byte{byte(i)}, 4096))
		}); err != nil {
			t.Fatal(err)
		}
		if err := store.checkpoint(store.wal.segID); err != nil {
			t.Fatal(err)
		}
		for name, kb := range dirtyWAL(t, dir) {
			if kb > 0 {
				t.Fatalf("after checkpoint %d, memtable log %s has %d KiB not on disk (logs %v)", i, name, kb, dirtyWAL(t, dir))
			}
		}
	}
	t.Logf("%d memtable switches right before a checkpoint's sync", switches)
}

// crashImage copies the database directory dir, as a power cut would
// leave it if Badger's files had reached the disk only up to the moment
// of badgerAt (a copy of them taken then, with no write running) and the
// write-ahead log up to now.
func crashImage(t *testing.T, badgerAt, dir string) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "image")
	copySparse(t, badgerAt, img)
	if err := os.RemoveAll(filepath.Join(img, walDirName)); err != nil {
		t.Fatal(err)
	}
	copySparse(t, filepath.Join(dir, walDirName), filepath.Join(img, walDirName))
	return img
}

// copySparse copies the files of directory from (and its subdirectories)
// to to, keeping holes: Badger's logs are large files mostly unwritten.
func copySparse(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		out := filepath.Join(to, rel)
		if d.IsDir() {
			return os.MkdirAll(out, 0o700)
		}
		src, err := os.Open(path)
		if err != nil {
			return err
		}
		defer src.Close()
		info, err := src.Stat()
		if err != nil {
			return err
		}
		dst, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		defer dst.Close()
		fd := int(src.Fd())
		for off := int64(0); off < info.Size(); {
			data, err := unix.Seek(fd, off, unix.SEEK_DATA)
			if err != nil { // ENXIO: only a hole is left
				break
			}
			hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
			if err != nil {
				return err
			}
			if _, err := io.Copy(io.NewOffsetWriter(dst, data), io.NewSectionReader(src, data, hole-data)); err != nil {
				return err
			}
			off = hole
		}
		return dst.Truncate(info.Size())
	})
	if err != nil {
		t.Fatal(err)
	}
}

// copyQuiet copies the store's directory with no write running.
func copyQuiet(t *testing.T, s *Store) string {
	t.Helper()
	s.wmu.Lock()
	defer s.wmu.Unlock()
	out := filepath.Join(t.TempDir(), "copy")
	copySparse(t, s.dir, out)
	return out
}

// contents reads every key and value of a store.
func contents(t *testing.T, s *Store) map[string]string {
	t.Helper()
	got := map[string]string{}
	if err := s.View(func(txn storage.Txn) error {
		it := txn.NewIterator(storage.IterOptions{})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			got[string(it.Item().Key())] = string(v)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

// TestLogReplaysWhatBadgerLost cuts the power, in effect, after a
// checkpoint: Badger's files as they were then, the write-ahead log as
// it is at the cut. Every transaction acknowledged after the checkpoint
// (sets, overwrites, deletes, transactions across several segments) must
// be there after the store opens again, and nothing else, also when the
// log ends in a torn record and when a read-only open finds the log.
func TestLogReplaysWhatBadgerLost(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	store, err := Open(dir, Options{SegmentSize: 64 << 10, MemTableSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ctx := context.Background()
	want := map[string]string{}
	write := func(round, n int) {
		t.Helper()
		for i := range n {
			if err := store.Update(ctx, false, func(txn storage.Txn) error {
				for j := range 1 + i%7 {
					k := fmt.Sprintf("k/%03d", (round*31+i*7+j)%200)
					switch (i + j) % 5 {
					case 0:
						if err := txn.Delete([]byte(k)); err != nil {
							return err
						}
						delete(want, k)
					default:
						v := strings.Repeat(fmt.Sprintf("%d.%d.%d;", round, i, j), 1+(i*j)%300)
						if err := txn.Set([]byte(k), []byte(v)); err != nil {
							return err
						}
						want[k] = v
					}
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		}
	}
	write(0, 200)
	// A checkpoint, then Badger's files as the disk would hold them.
	if err := store.checkpoint(store.wal.segID); err != nil {
		t.Fatal(err)
	}
	badgerAt := copyQuiet(t, store)
	// No checkpoint after this: the log keeps every segment.
	release := make(chan struct{})
	hold := func() { <-release }
	store.beforeCheckpoint.Store(&hold)
	defer close(release)
	segsBefore, _ := listSegments(store.walDir)
	write(1, 300)
	write(2, 300)
	segsAfter, _ := listSegments(store.walDir)
	if len(segsAfter) < len(segsBefore)+2 {
		t.Fatalf("the writes should span several segments: %v then %v", segsBefore, segsAfter)
	}

	img := crashImage(t, badgerAt, dir)
	if got := openContents(t, img, Options{MemTableSize: 4 << 20}); !maps.Equal(got, want) {
		t.Fatalf("after replay: %d keys, want %d (%s)", len(got), len(want), firstDiff(got, want))
	}

	t.Run("torn tail", func(t *testing.T) {
		img := crashImage(t, badgerAt, dir)
		ids, _ := listSegments(filepath.Join(img, walDirName))
		last := filepath.Join(img, walDirName, segmentName(ids[len(ids)-1]))
		data, err := os.ReadFile(last)
		if err != nil {
			t.Fatal(err)
		}
		end := 0
		for {
			_, n, _ := nextRecord(data[end:])
			if n == 0 {
				break
			}
			end += n
		}
		// Half a record where the next would go: a header and a body
		// whose checksum does not match.
		torn := appendRecord(nil, appendOp(nil, opSet, []byte("k/torn"), []byte("never acknowledged")))
		torn = torn[:len(torn)-3]
		f, err := os.OpenFile(last, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt(append(torn, 0, 0, 0, 0, 0, 0, 0, 0), int64(end))
		f.Close()
		if got := openContents(t, img, Options{MemTableSize: 4 << 20}); !maps.Equal(got, want) {
			t.Fatalf("after a torn tail: %s", firstDiff(got, want))
		}
	})

	t.Run("read-only open", func(t *testing.T) {
		img := crashImage(t, badgerAt, dir)
		if got := openContents(t, img, Options{MemTableSize: 4 << 20, ReadOnly: true}); !maps.Equal(got, want) {
			t.Fatalf("read-only: %s", firstDiff(got, want))
		}
		if pending, err := walHasRecords(filepath.Join(img, walDirName)); err != nil || pending {
			t.Fatalf("the read-only open should have replayed the log and emptied it: %v %v", pending, err)
		}
	})

	t.Run("damage before a later segment", func(t *testing.T) {
		img := crashImage(t, badgerAt, dir)
		ids, _ := listSegments(filepath.Join(img, walDirName))
		first := filepath.Join(img, walDirName, segmentName(ids[0]))
		f, err := os.OpenFile(first, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt([]byte{0xff}, recordHeader+2) // inside the first record's body
		f.Close()
		s, err := Open(img, Options{MemTableSize: 4 << 20})
		if err == nil {
			s.Close()
			t.Fatal("a log damaged before later segments' records opened")
		}
		if !strings.Contains(err.Error(), "after the damaged record") {
			t.Fatalf("unclear error: %v", err)
		}
	})
}

func openContents(t *testing.T, dir string, o Options) map[string]string {
	t.Helper()
	s, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	return contents(t, s)
}

func firstDiff(got, want map[string]string) string {
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			return fmt.Sprintf("%s: got %.40q (present %v), want %.40q", k, g, ok, v)
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			return fmt.Sprintf("%s: got %.40q, want absent", k, v)
		}
	}
	return "same"
}

// TestCloseEmptiesTheLog: a clean close leaves Badger's files holding
// everything and no segment to replay.
func TestCloseEmptiesTheLog(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	store, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Update(context.Background(), false, func(txn storage.Txn) error {
		return txn.Set([]byte("a"), []byte("b"))
	}); err != nil {
		t.Fatal(err)
	}
	if pending, _ := walHasRecords(filepath.Join(dir, walDirName)); !pending {
		t.Fatal("an acknowledged write should be in the log")
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	ids, err := listSegments(filepath.Join(dir, walDirName))
	if err != nil || len(ids) != 0 {
		t.Fatalf("segments after a clean close: %v %v", ids, err)
	}
	if got := openContents(t, dir, Options{ReadOnly: true}); got["a"] != "b" {
		t.Fatalf("after close: %v", got)
	}
}

// TestLogFailureSticks breaks the log under the store (its segment's
// file closed: fault injection): the write waiting on it fails, and so
// does every write after, until a restart, which replays what was synced.
func TestLogFailureSticks(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	store, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	set := func(k string) error {
		return store.Update(ctx, false, func(txn storage.Txn) error { return txn.Set([]byte(k), []byte(k)) })
	}
	if err := set("before"); err != nil {
		t.Fatal(err)
	}
	store.wmu.Lock()
	store.wal.seg.Close()
	store.wmu.Unlock()
	for _, k := range []string{"during", "after"} {
		if err := set(k); !errors.Is(err, storage.ErrUnavailable) {
			t.Fatalf("write %q after the log failed: %v", k, err)
		}
	}
	if err := store.Check(); !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("Check after the log failed: %v", err)
	}
	store.Close()
	if got := openContents(t, dir, Options{}); got["before"] != "before" || got["after"] != "" {
		t.Fatalf("after restart: %v", got)
	}
}

// FuzzLogRecords reads any bytes as a log segment: it must not panic,
// and every record it accepts must frame the same body again.
func FuzzLogRecords(f *testing.F) {
	body := appendOp(appendOp(nil, opSet, []byte("key"), []byte("value")), opDelete, []byte("gone"), nil)
	f.Add(appendRecord(nil, body))
	f.Add(appendRecord(appendRecord(nil, body), nil))
	f.Add([]byte{4, 0, 0, 0, 1, 2, 3, 4, 1, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		for off := 0; off < len(data); {
			body, n, err := nextRecord(data[off:])
			if err != nil || n == 0 {
				return
			}
			if again := appendRecord(nil, body); !bytes.Equal(again, data[off:off+n]) {
				t.Fatalf("record at %d frames differently", off)
			}
			var rebuilt []byte
			if err := eachOp(body, func(kind byte, key, value []byte) error {
				rebuilt = appendOp(rebuilt, kind, key, value)
				return nil
			}); err == nil && !bytes.Equal(rebuilt, body) {
				t.Fatalf("record at %d: ops rebuild %x, body %x", off, rebuilt, body)
			}
			off += n
		}
	})
}

// TestCrashBetweenLogAndCommit copies the database, as a crash would
// leave it, at the two moments around a transaction's log fdatasync:
// before it, the transaction is nowhere; after it and before Badger's
// commit, replay brings it back whole. Each transaction sets its own key
// and a shared counter (as a reveal writes its audit entry and its
// grant's use count): the two must agree in every image.
func TestCrashBetweenLogAndCommit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	store, err := Open(dir, Options{SegmentSize: 16 << 10, MemTableSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	const crashAt = 37
	var n int
	images := map[string]string{}
	snap := func(name string) func() {
		return func() {
			if n == crashAt {
				images[name] = filepath.Join(t.TempDir(), name)
				copySparse(t, dir, images[name])
			}
		}
	}
	store.SetSyncHooks(snap("before"), snap("after"))
	for n = 1; n <= 60; n++ {
		if err := store.Update(context.Background(), false, func(txn storage.Txn) error {
			if err := txn.Set([]byte(fmt.Sprintf("k/%03d", n)), bytes.Repeat([]byte{byte(n)}, 700)); err != nil {
				return err
			}
			return txn.Set([]byte("counter"), []byte(strconv.Itoa(n)))
		}); err != nil {
			t.Fatal(err)
		}
	}
	store.SetSyncHooks(nil, nil)
	for name, last := range map[string]int{"before": crashAt - 1, "after": crashAt} {
		got := openContents(t, images[name], Options{MemTableSize: 4 << 20})
		if got["counter"] != strconv.Itoa(last) {
			t.Errorf("%s the fdatasync: counter %q, want %d", name, got["counter"], last)
		}
		for i := 1; i <= 60; i++ {
			if _, ok := got[fmt.Sprintf("k/%03d", i)]; ok != (i <= last) {
				t.Errorf("%s the fdatasync: key %d present %v, want %v", name, i, ok, i <= last)
			}
		}
	}
}

// TestReadOnlyRefusesWrites: a read-only store answers a write with an
// error, whether the write sets a key or commits nothing.
func TestReadOnlyRefusesWrites(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	store, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	store.Close()
	ro, err := Open(dir, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	for name, fn := range map[string]func(storage.Txn) error{
		"set":     func(txn storage.Txn) error { return txn.Set([]byte("k"), []byte("v")) },
		"nothing": func(storage.Txn) error { return nil },
	} {
		if err := ro.Update(context.Background(), false, fn); err == nil {
			t.Errorf("%s: a read-only store took a write", name)
		}
	}
}
