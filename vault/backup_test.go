package vault

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/agentvault/agentvault/storage/badgerstore"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4/pb"
	"google.golang.org/protobuf/proto"

	"github.com/agentvault/agentvault/keys"
	"github.com/agentvault/agentvault/storage"
	"github.com/agentvault/agentvault/vault/auditlog"
)

// openEnvAt opens a vault over an existing data directory.
func openEnvAt(t *testing.T, dir string) *env {
	e := &env{t: t, dir: dir, clock: &clock{t: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}}
	e.open()
	t.Cleanup(e.close)
	return e
}

// takeBackup writes a backup of e to a new file and returns its path.
func takeBackup(t *testing.T, e *env) (string, BackupHeader) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "vault.avbackup")
	return path, writeBackupFile(t, e.svc, path)
}

// writeBackupFile takes a backup into path, synced.
func writeBackupFile(tb testing.TB, svc *Service, path string) BackupHeader {
	tb.Helper()
	b, err := svc.BeginBackup(context.Background(), RequestMeta{RequestID: "backup-test"})
	if err != nil {
		tb.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if _, err := b.WriteTo(f); err != nil {
		tb.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		tb.Fatal(err)
	}
	return b.Header
}

// backupBody is a backup's decompressed Badger stream.
func backupBody(t *testing.T, raw []byte) []byte {
	t.Helper()
	i := bytes.IndexByte(raw[len(backupMagic):], '\n')
	zr, err := gzip.NewReader(bytes.NewReader(raw[len(backupMagic)+i+1:]))
	if err != nil {
		t.Fatal(err)
	}
	zr.Multistream(false)
	body, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// TestBackupRestore takes a backup while writes go on, restores it into a
// new data directory, and opens a vault there: every record acknowledged
// before the backup is there and reveals its value, the audit chain
// verifies and holds the backup's own entry, and the restored vault takes
// new writes that survive a restart. The backup holds no plaintext.
func TestBackupRestore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	e.mustCollection(peopleSchema)
	secrets := map[string]string{}
	var recs []Record
	for i := range 20 {
		note := fmt.Sprintf("BACKUP-SECRET-%02d-c91e", i)
		secrets[note] = ""
		r, err := e.svc.CreateRecords(ctx, RequestMeta{}, "people", []map[string]json.RawMessage{
			fields("name", fmt.Sprintf("person %d", i), "note", note, "card", "4929 3817 2265 88"+fmt.Sprintf("%02d", i)),
		})
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r[0])
	}

	// Writers keep going while the backup streams.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := e.svc.CreateRecords(ctx, RequestMeta{}, "people", []map[string]json.RawMessage{
				fields("name", "during", "note", fmt.Sprintf("DURING-%d", i)),
			}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	pub, err := e.svc.AuditPublicKey(ctx) // before the backup: it holds the key
	if err != nil {
		t.Fatal(err)
	}
	path, h := takeBackup(t, e)
	close(stop)
	wg.Wait()
	if h.AuditSeq == 0 || h.AuditHash == "" || h.KEK.Provider != "local" {
		t.Fatalf("header = %+v", h)
	}

	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	body := backupBody(t, raw)
	for s := range secrets {
		if bytes.Contains(body, []byte(s)) || bytes.Contains(raw, []byte(s)) {
			t.Fatalf("plaintext %q is in the backup", s)
		}
	}
	if !bytes.Contains(body, []byte("person 7")) {
		t.Fatal("the backup body does not hold the records' plain fields: the no-plaintext check would prove nothing")
	}

	dir := t.TempDir()
	copyFile(t, filepath.Join(e.dir, "dev-kek.json"), filepath.Join(dir, "dev-kek.json"))
	res, err := RestoreBackup(ctx, path, filepath.Join(dir, "db"), RestoreOptions{Keys: e.svc.keys, AuditPublicKey: pub})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Audit.OK || res.Audit.Entries < h.AuditSeq || res.Header.AuditHash != h.AuditHash || res.Stats.Entries == 0 || !res.Stats.Authenticated {
		t.Fatalf("restore result = %+v", res)
	}
	if _, err := os.Stat(filepath.Join(dir, "db.restoring")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("restore left its work directory: %v", err)
	}

	r := openEnvAt(t, dir)
	for _, want := range recs {
		got, err := r.svc.GetRecord(ctx, RequestMeta{}, "people", want.ID, "")
		if err != nil {
			t.Fatalf("record %s lost in the restore: %v", want.ID, err)
		}
		if tokenOf(t, *got, "note") != tokenOf(t, want, "note") {
			t.Fatalf("record %s: token changed", want.ID)
		}
		v := r.reveal(tokenOf(t, *got, "note"))
		var s string
		json.Unmarshal([]byte(v), &s)
		if _, ok := secrets[s]; !ok {
			t.Fatalf("record %s reveals %s", want.ID, v)
		}
	}
	vr, err := r.svc.VerifyAudit(ctx)
	if err != nil || !vr.OK {
		t.Fatalf("restored audit: %+v %v", vr, err)
	}
	// The restored log ends with the restore, naming the backup.
	last, _, err := r.svc.ListAudit(ctx, AuditFilter{Newest: true, Limit: 1, Before: res.Audit.Entries + 1})
	if err != nil || len(last) != 1 || last[0].Action != "backup.restore" || last[0].Seq != res.Audit.Entries ||
		!strings.Contains(last[0].Reason, fmt.Sprintf("entry %d ", h.AuditSeq)) {
		t.Fatalf("last restored audit entry: %+v %v", last, err)
	}
	// The restored vault takes writes (versions continue past the loaded
	// ones, or these would be hidden) and keeps them across a restart.
	after, err := r.svc.CreateRecords(ctx, RequestMeta{}, "people", []map[string]json.RawMessage{fields("note", "AFTER-RESTORE")})
	if err != nil {
		t.Fatal(err)
	}
	r.restart()
	got, err := r.svc.GetRecord(ctx, RequestMeta{}, "people", after[0].ID, "")
	if err != nil {
		t.Fatal(err)
	}
	if v := r.reveal(tokenOf(t, *got, "note")); v != `"AFTER-RESTORE"` {
		t.Fatalf("record written after the restore reveals %s", v)
	}
	if vr, err := r.svc.VerifyAudit(ctx); err != nil || !vr.OK || vr.Entries <= res.Audit.Entries {
		t.Fatalf("audit after new writes: %+v %v", vr, err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestRestoreRefusesBadBackups: a damaged, cut or mismatched backup, or a
// target that already holds a database, restores nothing and leaves no
// half-restored directory behind.
func TestRestoreRefusesBadBackups(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	e.mustCollection(peopleSchema)
	for i := range 50 {
		if _, err := e.svc.CreateRecords(ctx, RequestMeta{}, "people", []map[string]json.RawMessage{fields("note", fmt.Sprint("n", i))}); err != nil {
			t.Fatal(err)
		}
	}
	path, _ := takeBackup(t, e)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// A second backup's header, for a header that does not belong to its body.
	path2, h2 := takeBackup(t, e)
	other, _ := os.ReadFile(path2)
	hdrEnd := len(backupMagic) + bytes.IndexByte(good[len(backupMagic):], '\n') + 1
	otherHdrEnd := len(backupMagic) + bytes.IndexByte(other[len(backupMagic):], '\n') + 1
	swapped := append(append([]byte{}, other[:otherHdrEnd]...), good[hdrEnd:]...)
	if !bytes.Contains(other[:otherHdrEnd], []byte(h2.AuditHash)) {
		t.Fatal("second header does not name its own entry")
	}
	flip := func(at int) []byte {
		b := append([]byte{}, good...)
		b[at] ^= 0x40
		return b
	}
	otherHexDigit := func(b []byte, at int) []byte {
		b = append([]byte{}, b...)
		if b[at] == '0' {
			b[at] = '1'
		} else {
			b[at] = '0'
		}
		return b
	}
	trailerLen := len(good) - bytes.LastIndex(good, []byte(backupTrailer))
	gzipEnd := len(good) - trailerLen

	// The review's reproduction: an admin principal with a chosen token
	// added to the body, recompressed, header and trailer kept.
	planted := plantPrincipal(t, good[:hdrEnd], good[hdrEnd:gzipEnd], good[gzipEnd:])
	// The same, with the trailer recomputed under a MAC key the attacker
	// made and wrapped under a KEK of their own.
	forged := forgeBackup(t, planted[:len(planted)-trailerLen])

	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"empty file", nil, "bad magic"},
		{"not a backup", []byte("hello\n"), "bad magic"},
		{"a format 1 backup (not authenticated)", []byte(strings.Replace(string(good), backupMagic, backupMagicV1, 1)), "format 1"},
		{"other format version", []byte(strings.Replace(string(good), `"format":2`, `"format":3`, 1)), "unknown format"},
		{"cut in the header", good[:hdrEnd-5], "header is truncated"},
		{"cut right after the header", good[:hdrEnd], "backup body"},
		{"cut in the middle", good[:hdrEnd+(gzipEnd-hdrEnd)/2], "truncated or corrupt"},
		{"MAC trailer missing", good[:gzipEnd], "trailer is missing"},
		{"last byte missing", good[:len(good)-1], "trailer is missing"},
		{"a byte changed in the body", flip(hdrEnd + (gzipEnd-hdrEnd)/2), "corrupt"},
		{"gzip trailer changed", flip(gzipEnd - 6), "corrupt"},
		{"a byte changed in the header", []byte(strings.Replace(string(good), `"audit_seq":`, `"audit_seq": `, 1)), "not authentic"},
		{"MAC changed", otherHexDigit(good, len(good)-3), "not authentic"},
		{"data after the end", append(append([]byte{}, good...), 'x'), "data after its end"},
		{"header of another backup", swapped, "not authentic"},
		{"an admin principal planted", planted, "not authentic"},
		{"planted, with a MAC under another KEK", forged, "does not unwrap"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := filepath.Join(t.TempDir(), "b.avbackup")
			if err := os.WriteFile(src, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, _, err := CheckBackup(bytes.NewReader(tc.data), e.svc.keys); err == nil {
				t.Fatal("CheckBackup passed it")
			}
			dir := t.TempDir()
			_, err := RestoreBackup(ctx, src, filepath.Join(dir, "db"), RestoreOptions{Keys: e.svc.keys})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Fatalf("a failed restore left %v behind", ents)
			}
		})
	}
	// Framing alone (no KEK) cannot see a planted principal: that is why
	// restore and --check need the KEK.
	if _, st, err := CheckBackupFraming(bytes.NewReader(planted)); err != nil || st.Authenticated {
		t.Fatalf("framing check of the planted backup: %+v %v", st, err)
	}

	t.Run("pinned audit key", func(t *testing.T) {
		other := newEnv(t)
		pub, err := other.svc.AuditPublicKey(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.svc.Checkpoint(ctx); err != nil {
			t.Fatal(err)
		}
		p, _ := takeBackup(t, e)
		_, err = RestoreBackup(ctx, p, filepath.Join(t.TempDir(), "db"), RestoreOptions{Keys: e.svc.keys, AuditPublicKey: pub})
		if err == nil {
			t.Fatal("restored under another audit key")
		}
	})
	t.Run("target holds a database", func(t *testing.T) {
		_, err := RestoreBackup(ctx, path, filepath.Join(e.dir, "db"), RestoreOptions{Keys: e.svc.keys})
		if err == nil || !strings.Contains(err.Error(), "already holds a database") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("the good one restores", func(t *testing.T) {
		if _, err := RestoreBackup(ctx, path, filepath.Join(t.TempDir(), "db"), RestoreOptions{Keys: e.svc.keys}); err != nil {
			t.Fatal(err)
		}
	})
}

// TestBackupNeedsItsAuditEntry: if the audit entry cannot be written there
// is no backup.
func TestBackupNeedsItsAuditEntry(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	fault := errors.New("injected: disk full")
	e.svc.writer.fault.Store(&fault)
	b, err := e.svc.BeginBackup(context.Background(), RequestMeta{})
	if err == nil || b != nil {
		t.Fatalf("backup began without its audit entry: %v", err)
	}
	e.svc.writer.fault.Store(nil)
	if _, err := e.svc.BeginBackup(context.Background(), RequestMeta{}); err != nil {
		t.Fatal(err)
	}
}

// FuzzCheckBackup feeds damaged backups to the checker that restore runs
// first: it must refuse them with an error, never panic or allocate
// without bound. The seed is a real backup of a small Badger database.
func FuzzCheckBackup(f *testing.F) {
	store, err := badgerstore.Open(filepath.Join(f.TempDir(), "db"), badgerstore.Options{})
	if err != nil {
		f.Fatal(err)
	}
	err = store.Update(context.Background(), false, func(txn storage.Txn) error {
		for i := range 20 {
			if err := txn.Set([]byte(fmt.Sprintf("k/%02d", i)), bytes.Repeat([]byte{byte(i)}, i*10)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		f.Fatal(err)
	}
	kek, err := keys.OpenLocalKEK(filepath.Join(f.TempDir(), "kek.json"))
	if err != nil {
		f.Fatal(err)
	}
	km := keys.NewManager(kek)
	mk, _ := km.NewMACKey()
	wrapped, err := km.WrapMACKey(mk, backupMACScope)
	if err != nil {
		f.Fatal(err)
	}
	var buf bytes.Buffer
	b := &Backup{store: store, mac: mk, Header: BackupHeader{Format: 2, AuditSeq: 1, AuditHash: auditlog.GenesisHash, MACKey: wrapped}}
	if _, err := b.WriteTo(&buf); err != nil {
		f.Fatal(err)
	}
	store.Close()
	if _, st, err := CheckBackup(bytes.NewReader(buf.Bytes()), km); err != nil || st.Entries != 20 || !st.Authenticated {
		f.Fatalf("seed backup: %+v %v", st, err)
	}
	f.Add(buf.Bytes())
	f.Add([]byte(backupMagic + `{"format":2}` + "\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, st, err := CheckBackup(bytes.NewReader(data), km)
		if err == nil && (h.Format != 2 || !st.Authenticated || !bytes.Equal(data, buf.Bytes())) {
			t.Fatalf("accepted a backup that is not the one written: %+v", h)
		}
		CheckBackupFraming(bytes.NewReader(data))
	})
}

// plantPrincipal is the attack from the review: decompress a backup's
// body, append a list holding an admin principal with a token the
// attacker knows, recompress, and keep the header and trailer.
func plantPrincipal(t *testing.T, header, body, trailer []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	p := storedPrincipal{Principal: Principal{ID: "00000000-0000-4000-8000-000000000001", Name: "planted", Roles: []Role{RoleAdmin}}, TokenHash: hashToken("avt_planted-token")}
	pv, _ := json.Marshal(p)
	list, err := proto.Marshal(&pb.KVList{Kv: []*pb.KV{
		{Key: principalKey(p.ID), Value: pv, Version: 1},
		{Key: tokenHashKey(p.TokenHash), Value: []byte(p.ID), Version: 1},
	}})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	zw.Write(plain)
	var size [8]byte
	binary.LittleEndian.PutUint64(size[:], uint64(len(list)))
	zw.Write(size[:])
	zw.Write(list)
	zw.Close()
	return append(append(append([]byte{}, header...), out.Bytes()...), trailer...)
}

// forgeBackup re-signs a backup's bytes (all but its trailer) under a MAC
// key the forger made, wrapped by a KEK the forger holds, set in the
// header.
func forgeBackup(t *testing.T, unsigned []byte) []byte {
	t.Helper()
	kek, err := keys.OpenLocalKEK(filepath.Join(t.TempDir(), "attacker-kek.json"))
	if err != nil {
		t.Fatal(err)
	}
	km := keys.NewManager(kek)
	mk, _ := km.NewMACKey()
	wrapped, err := km.WrapMACKey(mk, backupMACScope)
	if err != nil {
		t.Fatal(err)
	}
	hdrEnd := len(backupMagic) + bytes.IndexByte(unsigned[len(backupMagic):], '\n') + 1
	var h BackupHeader
	if err := json.Unmarshal(unsigned[len(backupMagic):hdrEnd], &h); err != nil {
		t.Fatal(err)
	}
	h.MACKey = wrapped
	hb, _ := json.Marshal(h)
	out := append(append([]byte(backupMagic), hb...), '\n')
	out = append(out, unsigned[hdrEnd:]...)
	sum := sha256.Sum256(out)
	tag, err := mk.Compute(backupMACInput(sum[:]))
	if err != nil {
		t.Fatal(err)
	}
	return append(out, backupTrailer+hex.EncodeToString(tag)+"\n"...)
}

// TestRestoreBoundsMemory is the review's gzip bomb: a backup of under a
// megabyte that expands to 192 MiB of lists, each within the list limit
// (the review's expanded to gigabytes; past the bound it makes no
// difference). The check and the restore refuse it once it expands past its
// bound, holding a bounded amount of memory (heap sampled while they run),
// and leave nothing behind.
func TestRestoreBoundsMemory(t *testing.T) {
	e := newEnv(t)
	mk, _ := e.svc.keys.NewMACKey()
	wrapped, err := e.svc.keys.WrapMACKey(mk, backupMACScope)
	if err != nil {
		t.Fatal(err)
	}
	hdr, _ := json.Marshal(BackupHeader{Format: 2, AuditSeq: 1, AuditHash: auditlog.GenesisHash, MACKey: wrapped})
	var file bytes.Buffer
	file.WriteString(backupMagic)
	file.Write(append(hdr, '\n'))
	zw, _ := gzip.NewWriterLevel(&file, gzip.BestSpeed)
	value := make([]byte, 1<<20)
	var kvs []*pb.KV
	for i := range 8 {
		kvs = append(kvs, &pb.KV{Key: []byte(fmt.Sprintf("k/%d", i)), Value: value, Version: 1})
	}
	list, _ := proto.Marshal(&pb.KVList{Kv: kvs})
	var size [8]byte
	binary.LittleEndian.PutUint64(size[:], uint64(len(list)))
	for range 24 { // 24 lists of 8 MiB
		zw.Write(size[:])
		zw.Write(list)
	}
	zw.Close()
	path := filepath.Join(t.TempDir(), "bomb.avbackup")
	if err := os.WriteFile(path, file.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Logf("bomb: %d bytes on disk, 192 MiB inside", file.Len())

	peak := func(run func() error) (uint64, error) {
		runtime.GC()
		var base runtime.MemStats
		runtime.ReadMemStats(&base)
		stop, done := make(chan struct{}), make(chan uint64)
		go func() {
			var m runtime.MemStats
			var peak uint64
			for {
				runtime.ReadMemStats(&m)
				peak = max(peak, m.HeapAlloc)
				select {
				case <-stop:
					done <- peak - min(peak, base.HeapAlloc)
					return
				case <-time.After(2 * time.Millisecond):
				}
			}
		}()
		err := run()
		close(stop)
		return <-done, err
	}
	const bound = 400 << 20
	used, err := peak(func() error {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		_, _, err = CheckBackup(f, e.svc.keys)
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "decompression bomb") || used > bound {
		t.Fatalf("check: %v, %d MiB of heap", err, used>>20)
	}
	t.Logf("check refused it with %d MiB of heap", used>>20)
	dir := t.TempDir()
	used, err = peak(func() error {
		_, err := RestoreBackup(context.Background(), path, filepath.Join(dir, "db"), RestoreOptions{Keys: e.svc.keys})
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "decompression bomb") || used > bound {
		t.Fatalf("restore: %v, %d MiB of heap", err, used>>20)
	}
	t.Logf("restore refused it with %d MiB of heap", used>>20)
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("a refused restore left %v", ents)
	}
}
