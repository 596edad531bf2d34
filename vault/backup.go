package vault

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/pb"
	"google.golang.org/protobuf/proto"

	"github.com/agentvault/agentvault/keys"
)

// A backup is the whole database as of one moment, taken online: records
// (ciphertexts and tokens), KEK-wrapped keysets, principals' token hashes,
// grants, approvals and the audit log. It holds no plaintext value and no
// key that decrypts one: the KEK stays in its provider (Vault Transit, or
// the development KEK file, which is never included).
//
// The file is a magic line, a JSON header line, then a gzip stream of
// Badger's backup format. gzip's CRC and length trailer make a truncated
// or corrupted file fail to restore instead of restoring part of a vault.
const backupMagic = "agentvault-backup 1\n"

// maxBackupList bounds one Badger KV list in a backup (Badger sends lists
// of at most ~100 MB), so a corrupt size field cannot make the restore
// allocate without limit.
const maxBackupList = 256 << 20

// BackupHeader describes a backup. AuditSeq and AuditHash are the audit
// entry that recorded the backup; the restored chain must contain it.
type BackupHeader struct {
	Format    int          `json:"format"`
	CreatedAt time.Time    `json:"created_at"`
	AuditSeq  uint64       `json:"audit_seq"`
	AuditHash string       `json:"audit_hash"`
	KEK       keys.KEKInfo `json:"kek"`
}

// Backup is a started backup: its audit entry is durable, and WriteTo
// streams the database.
type Backup struct {
	Header BackupHeader
	store  *Store
}

// BeginBackup records the backup in the audit log, durably, and returns
// the backup to stream. If the entry cannot be written there is no backup:
// a copy of the whole vault leaves only with a record of who took it.
func (s *Service) BeginBackup(ctx context.Context, meta RequestMeta) (*Backup, error) {
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	info, err := s.keys.KEK().Describe(dctx)
	cancel()
	if err != nil {
		// The backup does not need the KEK; the header then names only the
		// provider. A backup during a KMS outage is worth more than the
		// version number.
		s.log.Warn("backup: cannot describe the KEK", "err", err)
		info = keys.KEKInfo{Provider: "unknown"}
	}
	e := s.newEntry(meta, "backup.create")
	e.Target = "database"
	e.Reason = "online backup of the whole database (ciphertexts, wrapped keysets, audit log); the KEK is not included"
	if err := s.writer.apply(&mutation{entry: e, size: 1024}); err != nil {
		return nil, err
	}
	s.log.Info("backup started", "actor", actorID(meta.Actor), "audit_seq", e.Seq, "request_id", meta.RequestID)
	return &Backup{store: s.store, Header: BackupHeader{
		Format: 1, CreatedAt: e.Time, AuditSeq: e.Seq, AuditHash: e.Hash, KEK: info,
	}}, nil
}

// WriteTo streams the backup to w: a consistent snapshot taken when it
// starts, while writes go on.
func (b *Backup) WriteTo(w io.Writer) (int64, error) {
	cw := &countWriter{w: w}
	hdr, err := json.Marshal(b.Header)
	if err != nil {
		return 0, err
	}
	if _, err := io.WriteString(cw, backupMagic); err != nil {
		return cw.n, err
	}
	if _, err := cw.Write(append(hdr, '\n')); err != nil {
		return cw.n, err
	}
	zw, err := gzip.NewWriterLevel(cw, gzip.BestSpeed)
	if err != nil {
		return cw.n, err
	}
	b.store.closeMu.RLock()
	defer b.store.closeMu.RUnlock()
	if b.store.closed {
		return cw.n, fmt.Errorf("%w: store closed", ErrUnavailable)
	}
	// Two readers rather than Badger's default eight: a backup shares the
	// machine with live traffic.
	stream := b.store.db.NewStream()
	stream.NumGo = 2
	stream.LogPrefix = "backup"
	if _, err := stream.Backup(zw, 0); err != nil {
		return cw.n, fmt.Errorf("backup: %w", err)
	}
	return cw.n, zw.Close()
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// BackupStats is what a full read of a backup found.
type BackupStats struct {
	Entries int   `json:"entries"`
	Bytes   int64 `json:"bytes"`
}

// CheckBackup reads a whole backup and checks its framing and gzip
// checksum without storing anything: a backup that passes restores
// completely.
func CheckBackup(r io.Reader) (BackupHeader, BackupStats, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	h, err := readBackupHeader(br)
	if err != nil {
		return h, BackupStats{}, err
	}
	zr, err := gzip.NewReader(br)
	if err != nil {
		return h, BackupStats{}, fmt.Errorf("backup body: %w", err)
	}
	zr.Multistream(false)
	var (
		st   BackupStats
		size [8]byte
		buf  bytes.Buffer
	)
	for {
		if _, err := io.ReadFull(zr, size[:]); err == io.EOF {
			break
		} else if err != nil {
			return h, st, fmt.Errorf("backup body is truncated or corrupt: %w", err)
		}
		n := binary.LittleEndian.Uint64(size[:])
		if n > maxBackupList {
			return h, st, fmt.Errorf("backup body is corrupt: a list of %d bytes", n)
		}
		// The buffer grows with the data that arrives, not with what a
		// corrupt size field claims.
		buf.Reset()
		if _, err := io.CopyN(&buf, zr, int64(n)); err != nil {
			return h, st, fmt.Errorf("backup body is truncated or corrupt: %w", err)
		}
		var list pb.KVList
		if err := proto.Unmarshal(buf.Bytes(), &list); err != nil {
			return h, st, fmt.Errorf("backup body is corrupt: %w", err)
		}
		st.Entries += len(list.Kv)
		st.Bytes += int64(n)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		return h, st, errors.New("backup has data after its end")
	}
	return h, st, nil
}

func readBackupHeader(br *bufio.Reader) (BackupHeader, error) {
	var h BackupHeader
	magic := make([]byte, len(backupMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != backupMagic {
		return h, errors.New("not an agentvault backup (bad magic line)")
	}
	line, err := br.ReadSlice('\n')
	if err != nil {
		return h, errors.New("backup header is truncated")
	}
	if err := json.Unmarshal(line, &h); err != nil || h.Format != 1 {
		return h, errors.New("backup header is corrupt or of an unknown format")
	}
	return h, nil
}

// RestoreResult is what a restore did and found.
type RestoreResult struct {
	Header BackupHeader `json:"header"`
	Stats  BackupStats  `json:"stats"`
	Audit  VerifyResult `json:"audit"`
}

// RestoreBackup restores the backup at path into dbDir, which must not
// hold a database. The server must not be running. It checks the whole
// file first, loads it beside dbDir, verifies the restored audit chain
// (and that it holds the entry that recorded the backup), and only then
// moves it into place: a failed restore leaves dbDir as it was.
func RestoreBackup(ctx context.Context, path, dbDir string, o StoreOptions) (*RestoreResult, error) {
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
	if res.Header, res.Stats, err = CheckBackup(f); err != nil {
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
	if err := load(f, tmp, res.Header, o); err != nil {
		return nil, err
	}
	store, err := OpenStore(tmp, StoreOptions{Logger: o.Logger, ReadOnly: true})
	if err != nil {
		return nil, err
	}
	res.Audit, err = VerifyAudit(ctx, store, nil)
	if err == nil {
		err = checkBackupEntry(store, res.Header)
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

// load reads a checked backup into a new database in dir and appends an
// audit entry that says so: the restored log ends where the snapshot
// did, and the next entry explains the gap.
func load(r io.Reader, dir string, h BackupHeader, o StoreOptions) error {
	br := bufio.NewReaderSize(r, 64<<10)
	if _, err := readBackupHeader(br); err != nil {
		return err
	}
	zr, err := gzip.NewReader(br)
	if err != nil {
		return err
	}
	zr.Multistream(false)
	store, err := OpenStore(dir, StoreOptions{Logger: o.Logger})
	if err != nil {
		return err
	}
	if err := store.db.Load(zr, 256); err != nil {
		store.Close()
		return fmt.Errorf("load backup: %w", err)
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

// checkBackupEntry finds the audit entry that recorded the backup.
func checkBackupEntry(store *Store, h BackupHeader) error {
	var e AuditEntry
	err := store.View(func(txn *badger.Txn) error {
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
