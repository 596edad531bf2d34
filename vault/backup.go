package vault

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4/pb"
	"google.golang.org/protobuf/proto"

	"github.com/agentvault/agentvault/keys"
	"github.com/agentvault/agentvault/storage"
	"github.com/agentvault/agentvault/storage/badgerstore"
)

// A backup is the whole database as of one moment, taken online: records
// (ciphertexts and tokens), KEK-wrapped keysets, principals' token hashes,
// grants, approvals and the audit log. It holds no plaintext value and no
// key that decrypts one: the KEK stays in its provider (Vault Transit, or
// the development KEK file, which is never included).
//
// The file is a magic line, a JSON header line, a gzip stream of Badger's
// backup format, and a trailer line "mac <hex>". The trailer is a Tink
// HMAC-SHA256 tag over the SHA-256 of every byte before it, under a key
// made for this backup and carried in the header wrapped by the KEK: a
// backup cannot be checked, or changed and re-tagged, without the KEK, so
// one planted principal or grant, a swapped header or a cut body is
// refused. gzip's CRC and length trailer also catch a transfer that broke
// off, which a check without the KEK (CheckBackupFraming) can see.
const backupMagic = "agentvault-backup 2\n"

// backupMagicV1 marks backups made before they were authenticated.
const backupMagicV1 = "agentvault-backup 1\n"

const (
	backupMACScope   = "backup/mac"
	backupMACContext = "agentvault/backup/v2\x00"
	backupTrailer    = "mac "
)

// Limits a restore holds a backup to, so a small hostile file (a gzip
// bomb, an absurd size field) cannot exhaust memory or disk before its
// MAC is found wrong. Lists: WriteTo asks Badger's stream for batches of
// at most backupBatch, which it overshoots by at most one of its 16 MB
// buffers and a value; keys and values: well above what agentvault writes
// (keys are names and ids, values at most a 128-field record or a
// compressed audit entry); the whole body: 64 times the file's size plus
// 64 MiB (ciphertexts and random tokens compress poorly; a real backup
// expands 1.5 to 10 times). With two pending writes a restore holds about
// two lists and two write batches: a few hundred MB at most.
const (
	backupBatch      = 16 << 20
	maxBackupList    = 96 << 20
	maxBackupKey     = 4 << 10
	maxBackupValue   = 32 << 20
	backupExpansion  = 64
	backupExpandBase = 64 << 20
)

// BackupHeader describes a backup. AuditSeq and AuditHash are the audit
// entry that recorded the backup; the restored chain must contain it.
// MACKey is the backup's MAC keyset, wrapped by the KEK.
type BackupHeader struct {
	Format    int          `json:"format"`
	CreatedAt time.Time    `json:"created_at"`
	AuditSeq  uint64       `json:"audit_seq"`
	AuditHash string       `json:"audit_hash"`
	KEK       keys.KEKInfo `json:"kek"`
	MACKey    []byte       `json:"mac_key"`
}

// Backup is a started backup: its audit entry is durable, and WriteTo
// streams the database.
type Backup struct {
	Header BackupHeader
	store  storage.Store
	mac    *keys.MACKey
}

// backupStore is a store that streams its keys in the backup body's format
// itself (Badger, with parallel readers); any other store is read through
// one snapshot (streamKeys).
type backupStore interface {
	StreamBackup(w io.Writer, maxSize uint64) error
}

// streamKeys writes every key of the store, from one snapshot, in the
// backup body's format: per batch of at most about maxSize bytes, its
// length (uint64, little-endian) and a KVList (Badger's stream format, so
// any backup restores into a Badger directory).
func streamKeys(w io.Writer, store storage.Store, maxSize int) error {
	return store.View(func(txn storage.Txn) error {
		it := txn.NewIterator(storage.IterOptions{PrefetchValues: true, PrefetchSize: 1024})
		defer it.Close()
		var list pb.KVList
		size := 0
		flush := func() error {
			if len(list.Kv) == 0 {
				return nil
			}
			b, err := proto.Marshal(&list)
			if err != nil {
				return err
			}
			var n [8]byte
			binary.LittleEndian.PutUint64(n[:], uint64(len(b)))
			if _, err := w.Write(n[:]); err != nil {
				return err
			}
			_, err = w.Write(b)
			list.Kv, size = list.Kv[:0], 0
			return err
		}
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			k := append([]byte(nil), item.Key()...)
			list.Kv = append(list.Kv, &pb.KV{Key: k, Value: v, Version: 1})
			if size += len(k) + len(v); size >= maxSize {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		return flush()
	})
}

// BeginBackup makes the backup's MAC key, records the backup in the audit
// log, durably, signs a checkpoint over that entry, and returns the backup
// to stream. If the KEK cannot wrap
// the key or the entry cannot be written there is no backup: a copy of the
// whole vault leaves only authenticated, and with a record of who took it.
func (s *Service) BeginBackup(ctx context.Context, meta RequestMeta) (*Backup, error) {
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	info, err := s.keys.KEK().Describe(dctx)
	cancel()
	if err != nil {
		s.log.Warn("backup: cannot describe the KEK", "err", err)
		info = keys.KEKInfo{Provider: "unknown"}
	}
	mk, err := s.keys.NewMACKey()
	if err != nil {
		return nil, err
	}
	wrapped, err := s.keys.WrapMACKey(mk, backupMACScope)
	if err != nil {
		return nil, kmsErr(err)
	}
	e := s.newEntry(meta, "backup.create")
	e.Target = "database"
	e.Reason = "online backup of the whole database (ciphertexts, wrapped keysets, audit log); the KEK is not included"
	if err := s.writer.apply(&mutation{entry: e, size: 1024}); err != nil {
		return nil, err
	}
	// A signed checkpoint over the backup's own entry travels with it, so
	// a restore pinned to the audit key (--pubkey) checks a signature
	// that covers the whole restored chain.
	if _, err := s.Checkpoint(ctx); err != nil {
		return nil, fmt.Errorf("checkpoint before the backup: %w", err)
	}
	s.log.Info("backup started", "actor", actorID(meta.Actor), "audit_seq", e.Seq, "request_id", meta.RequestID)
	return &Backup{store: s.store, mac: mk, Header: BackupHeader{
		Format: 2, CreatedAt: e.Time, AuditSeq: e.Seq, AuditHash: e.Hash, KEK: info, MACKey: wrapped,
	}}, nil
}

// WriteTo streams the backup to w: a consistent snapshot taken when it
// starts, while writes go on, then its MAC.
func (b *Backup) WriteTo(w io.Writer) (int64, error) {
	cw := &countWriter{w: w}
	digest := sha256.New()
	hw := io.MultiWriter(cw, digest)
	hdr, err := json.Marshal(b.Header)
	if err != nil {
		return 0, err
	}
	if _, err := io.WriteString(hw, backupMagic); err != nil {
		return cw.n, err
	}
	if _, err := hw.Write(append(hdr, '\n')); err != nil {
		return cw.n, err
	}
	zw, err := gzip.NewWriterLevel(hw, gzip.BestSpeed)
	if err != nil {
		return cw.n, err
	}
	if bs, ok := b.store.(backupStore); ok {
		err = bs.StreamBackup(zw, backupBatch)
	} else {
		err = streamKeys(zw, b.store, backupBatch)
	}
	if err != nil {
		return cw.n, fmt.Errorf("backup: %w", err)
	}
	if err := zw.Close(); err != nil {
		return cw.n, err
	}
	tag, err := b.mac.Compute(backupMACInput(digest.Sum(nil)))
	if err != nil {
		return cw.n, err
	}
	_, err = io.WriteString(cw, backupTrailer+hex.EncodeToString(tag)+"\n")
	return cw.n, err
}

func backupMACInput(digest []byte) []byte { return append([]byte(backupMACContext), digest...) }

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// BackupStats is what a full read of a backup found. Authenticated says
// whether its MAC was checked (with the KEK).
type BackupStats struct {
	Entries       int   `json:"entries"`
	Bytes         int64 `json:"bytes"`
	Authenticated bool  `json:"authenticated"`
}

// CheckBackup reads a whole backup, storing nothing: framing, limits, the
// gzip checksum, and its MAC, with the key the header carries unwrapped by
// km's KEK. A backup that passes is the one the server wrote, whole; any
// changed byte fails.
func CheckBackup(r io.Reader, km *keys.Manager) (BackupHeader, BackupStats, error) {
	return readBackup(r, km, nil)
}

// CheckBackupFraming checks what can be checked without the KEK: framing,
// limits and the gzip checksum. It proves a transfer arrived whole, not
// that nobody changed the file; CheckBackup does.
func CheckBackupFraming(r io.Reader) (BackupHeader, BackupStats, error) {
	return readBackup(r, nil, nil)
}

// readBackup reads a backup from its magic line to its MAC trailer,
// handing each KV list to fn (if set). With km it unwraps the header's
// MAC key first and, at the end, checks the tag over every byte read: a
// caller that acts on the lists must discard what it did unless
// readBackup returns no error.
func readBackup(r io.Reader, km *keys.Manager, fn func(*pb.KVList) error) (BackupHeader, BackupStats, error) {
	var st BackupStats
	size, _ := sizeOf(r)
	digest := sha256.New()
	br := bufio.NewReaderSize(r, 64<<10)
	hr := &hashingReader{r: br, h: digest}
	h, err := readBackupHeader(hr)
	if err != nil {
		return h, st, err
	}
	var mk *keys.MACKey
	if km != nil {
		if mk, err = km.OpenMACKey(h.MACKey, backupMACScope); err != nil {
			if errors.Is(err, keys.ErrKMSUnavailable) {
				return h, st, fmt.Errorf("%w: cannot unwrap the backup's MAC key: %v", ErrUnavailable, err)
			}
			return h, st, errors.New("backup is not authentic: its MAC key does not unwrap under this KEK (another vault's backup, another KEK, or a changed header)")
		}
	}
	zr, err := gzip.NewReader(hr)
	if err != nil {
		return h, st, fmt.Errorf("backup body: %w", err)
	}
	zr.Multistream(false)
	limit := int64(backupExpandBase)
	if size > 0 {
		limit += backupExpansion * size
	}
	if st, err = readBackupLists(zr, limit, fn); err != nil {
		return h, st, err
	}
	hr.flush()
	sum := digest.Sum(nil)
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, backupTrailer) {
		return h, st, errors.New("backup is truncated: its MAC trailer is missing")
	}
	tag, err := hex.DecodeString(strings.TrimSuffix(strings.TrimPrefix(line, backupTrailer), "\n"))
	if err != nil {
		return h, st, errors.New("backup is corrupt: its MAC trailer does not parse")
	}
	if _, err := br.ReadByte(); err != io.EOF {
		return h, st, errors.New("backup has data after its end")
	}
	if mk != nil {
		if err := mk.Verify(tag, backupMACInput(sum)); err != nil {
			return h, st, errors.New("backup is not authentic: its MAC does not match its contents (a byte was changed, added or removed)")
		}
		st.Authenticated = true
	}
	return h, st, nil
}

// readBackupLists reads Badger's backup stream: lists of KVs, each behind
// its size, within the limits above.
func readBackupLists(zr io.Reader, limit int64, fn func(*pb.KVList) error) (BackupStats, error) {
	var (
		st   BackupStats
		size [8]byte
		buf  bytes.Buffer
	)
	for {
		if _, err := io.ReadFull(zr, size[:]); err == io.EOF {
			return st, nil
		} else if err != nil {
			return st, fmt.Errorf("backup body is truncated or corrupt: %w", err)
		}
		n := binary.LittleEndian.Uint64(size[:])
		if n > maxBackupList {
			return st, fmt.Errorf("backup body is corrupt: a list of %d bytes (at most %d)", n, maxBackupList)
		}
		if st.Bytes+int64(n) > limit {
			return st, fmt.Errorf("backup body expands past %d bytes (%d times its compressed size and 64 MiB): refused as a decompression bomb", limit, backupExpansion)
		}
		// The buffer grows with the data that arrives, not with what a
		// corrupt size field claims.
		buf.Reset()
		if _, err := io.CopyN(&buf, zr, int64(n)); err != nil {
			return st, fmt.Errorf("backup body is truncated or corrupt: %w", err)
		}
		var list pb.KVList
		if err := proto.Unmarshal(buf.Bytes(), &list); err != nil {
			return st, fmt.Errorf("backup body is corrupt: %w", err)
		}
		for _, kv := range list.Kv {
			if len(kv.Key) == 0 || len(kv.Key) > maxBackupKey || len(kv.Value) > maxBackupValue {
				return st, fmt.Errorf("backup body is corrupt: a key of %d bytes or a value of %d bytes", len(kv.Key), len(kv.Value))
			}
		}
		st.Entries += len(list.Kv)
		st.Bytes += int64(n)
		if fn != nil {
			if err := fn(&list); err != nil {
				return st, err
			}
		}
	}
}

// sizeOf is a file's size, for the expansion limit; 0 when unknown.
func sizeOf(r io.Reader) (int64, bool) {
	f, ok := r.(*os.File)
	if !ok {
		return 0, false
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return 0, false
	}
	return fi.Size(), true
}

// hashingReader hashes exactly the bytes its reader hands out. gzip reads
// through its ByteReader, so it consumes the gzip member and no more: the
// trailer after it stays unread and unhashed. Bytes are hashed in chunks.
type hashingReader struct {
	r   *bufio.Reader
	h   hash.Hash
	buf [4096]byte
	n   int
}

func (h *hashingReader) Read(p []byte) (int, error) {
	h.flush()
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	return n, err
}

func (h *hashingReader) ReadByte() (byte, error) {
	c, err := h.r.ReadByte()
	if err == nil {
		if h.n == len(h.buf) {
			h.flush()
		}
		h.buf[h.n] = c
		h.n++
	}
	return c, err
}

func (h *hashingReader) flush() {
	h.h.Write(h.buf[:h.n])
	h.n = 0
}

func readBackupHeader(r io.Reader) (BackupHeader, error) {
	var h BackupHeader
	magic := make([]byte, len(backupMagic))
	if _, err := io.ReadFull(r, magic); err != nil || (string(magic) != backupMagic && string(magic) != backupMagicV1) {
		return h, errors.New("not an agentvault backup (bad magic line)")
	}
	if string(magic) == backupMagicV1 {
		return h, errors.New("a format 1 backup, made before backups were authenticated: it cannot be checked, so it is not restored; take a new backup")
	}
	line, err := readLine(r, 64<<10)
	if err != nil {
		return h, errors.New("backup header is truncated")
	}
	if err := json.Unmarshal(line, &h); err != nil || h.Format != 2 || len(h.MACKey) == 0 {
		return h, errors.New("backup header is corrupt or of an unknown format")
	}
	return h, nil
}

// readLine reads up to and including '\n', at most max bytes, one byte at
// a time (so a hashing reader sees exactly the header).
func readLine(r io.Reader, max int) ([]byte, error) {
	br, ok := r.(io.ByteReader)
	if !ok {
		return nil, errors.New("reader cannot read bytes")
	}
	var line []byte
	for len(line) < max {
		c, err := br.ReadByte()
		if err != nil {
			return nil, err
		}
		line = append(line, c)
		if c == '\n' {
			return line, nil
		}
	}
	return nil, errors.New("line too long")
}

// RestoreResult is what a restore did and found.
type RestoreResult struct {
	Header BackupHeader `json:"header"`
	Stats  BackupStats  `json:"stats"`
	Audit  VerifyResult `json:"audit"`
}

// RestoreOptions configure a restore.
type RestoreOptions struct {
	// Keys unwraps the backup's MAC key: the KEK the backup was taken
	// under (required).
	Keys   *keys.Manager
	Logger *slog.Logger
	// AuditPublicKey, if set, pins the audit checkpoint key: the restored
	// log's checkpoints must verify under it, not only under the key the
	// backup itself carries.
	AuditPublicKey []byte
}

// RestoreBackup restores the backup at path into dbDir, which must not
// hold a database. The server must not be running. It checks the whole
// file first (MAC included), loads it beside dbDir with the MAC checked
// again over what it loaded, verifies the restored audit chain (and that
// it holds the entry that recorded the backup), and only then moves it
// into place: a failed restore leaves dbDir as it was.
func RestoreBackup(ctx context.Context, path, dbDir string, o RestoreOptions) (*RestoreResult, error) {
	if o.Keys == nil {
		return nil, errors.New("restore needs the KEK the backup was taken under, to check its MAC")
	}
	if ents, err := os.ReadDir(dbDir); err == nil && len(ents) > 0 {
		return nil, fmt.Errorf("%s already holds a database; restore into a new data directory", dbDir)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	res := &RestoreResult{}
	if res.Header, res.Stats, err = CheckBackup(f, o.Keys); err != nil {
		return nil, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	tmp := dbDir + ".restoring"
	if err := os.RemoveAll(tmp); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(dbDir), 0o700); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tmp)
		}
	}()
	if err := load(f, tmp, o); err != nil {
		return nil, err
	}
	store, err := badgerstore.Open(tmp, badgerstore.Options{Logger: o.Logger, ReadOnly: true})
	if err != nil {
		return nil, err
	}
	res.Audit, err = VerifyAudit(ctx, store, o.AuditPublicKey)
	if err == nil {
		err = checkBackupEntry(store, res.Header)
	}
	if err == nil && o.AuditPublicKey != nil {
		err = checkPinnedKey(store, o.AuditPublicKey)
	}
	if cerr := store.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	if !res.Audit.OK {
		return nil, fmt.Errorf("the restored audit log does not verify at entry %d: %s", res.Audit.FirstBadSeq, res.Audit.Reason)
	}
	if err := os.Rename(tmp, dbDir); err != nil {
		return nil, err
	}
	if err := syncDir(filepath.Dir(dbDir)); err != nil {
		return nil, err
	}
	ok = true
	return res, nil
}

// load reads a backup into a new database in dir, a few writes pending at
// a time, checking its limits and MAC as it goes (the file may have
// changed since it was checked), then reopens the database (Badger learns
// the loaded versions on open) and appends an audit entry that says so:
// the restored log ends where the snapshot did, and the next entry
// explains the gap.
func load(r io.Reader, dir string, o RestoreOptions) error {
	store, err := badgerstore.Open(dir, badgerstore.Options{Logger: o.Logger})
	if err != nil {
		return err
	}
	ldr := store.NewLoader(2)
	h, _, err := readBackup(r, o.Keys, func(list *pb.KVList) error {
		for _, kv := range list.Kv {
			if err := ldr.Set(kv); err != nil {
				return err
			}
		}
		return nil
	})
	if ferr := ldr.Finish(); err == nil {
		err = ferr
	}
	if cerr := store.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("load backup: %w", err)
	}
	if store, err = badgerstore.Open(dir, badgerstore.Options{Logger: o.Logger}); err != nil {
		return err
	}
	w, err := newWriter(store)
	if err != nil {
		store.Close()
		return err
	}
	e := &AuditEntry{
		Time: time.Now().UTC(), Actor: actorID(nil), Action: "backup.restore", Decision: DecisionOK,
		Fields: []string{}, RecordIDs: []string{}, Target: "database",
		Reason: fmt.Sprintf("restored offline from the backup recorded as entry %d (taken %s); what the source wrote after it is not in this copy",
			h.AuditSeq, h.CreatedAt.UTC().Format(time.RFC3339)),
	}
	err = w.apply(&mutation{entry: e, size: 1024})
	w.close()
	if err != nil {
		store.Close()
		return fmt.Errorf("record the restore in the audit log: %w", err)
	}
	return store.Close()
}

// checkPinnedKey refuses a restored database whose checkpoint key is not
// the pinned one.
func checkPinnedKey(store storage.Store, pinned []byte) error {
	stored, err := StoredAuditPublicKey(store)
	if err != nil {
		return fmt.Errorf("the restored database has no audit checkpoint key to compare with the pinned one: %w", err)
	}
	var a, b any
	if json.Unmarshal(stored, &a) != nil || json.Unmarshal(pinned, &b) != nil || !reflect.DeepEqual(a, b) {
		return errors.New("the restored database's audit checkpoint key is not the pinned one (--pubkey)")
	}
	return nil
}

// checkBackupEntry finds the audit entry that recorded the backup.
func checkBackupEntry(store storage.Store, h BackupHeader) error {
	var e AuditEntry
	err := store.View(func(txn storage.Txn) error {
		item, err := txn.Get(auditKey(h.AuditSeq))
		if err != nil {
			return err
		}
		e, err = decodeEntry(item)
		return err
	})
	if err != nil || e.Hash != h.AuditHash || e.Action != "backup.create" {
		return fmt.Errorf("the restored audit log does not hold the entry that recorded this backup (seq %d): header and contents do not belong together", h.AuditSeq)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
