package vault

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/agentvault/agentvault/storage"
	"github.com/agentvault/agentvault/storage/badgerstore"
)

// MigrateResult says what a migration copied and how the copy verified.
type MigrateResult struct {
	Keys   int          `json:"keys"`
	Bytes  int64        `json:"bytes"`
	Audit  VerifyResult `json:"audit"`
	Target string       `json:"target"`
}

// migrateBatchBytes bounds one transaction of a migration.
const migrateBatchBytes = 8 << 20

// Migrate copies a whole vault from one store into another, empty one (a
// Badger directory into PostgreSQL): every key as it is, ciphertexts,
// wrapped keysets and the audit log alike, nothing decrypted. It first
// checks the source's audit chain, then copies from one snapshot of the
// source, appends a store.migrate entry to the copied chain saying where
// it came from, and verifies the target's chain whole (against the
// source's checkpoint key). target names the target in that entry, never
// with credentials.
func Migrate(ctx context.Context, from, to storage.Store, target string) (*MigrateResult, error) {
	pub, err := StoredAuditPublicKey(from)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("source: %w", err)
	}
	src, err := VerifyAudit(ctx, from, pub)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	if !src.OK {
		return nil, fmt.Errorf("the source's audit log does not verify at entry %d (%s): not migrating a tampered vault", src.FirstBadSeq, src.Reason)
	}
	if err := to.View(func(txn storage.Txn) error {
		it := txn.NewIterator(storage.IterOptions{})
		defer it.Close()
		if it.Rewind(); it.Valid() {
			return errors.New("the target store is not empty: migrate into a new database")
		}
		return nil
	}); err != nil {
		return nil, err
	}
	res := &MigrateResult{Target: target}
	err = from.View(func(txn storage.Txn) error {
		it := txn.NewIterator(storage.IterOptions{PrefetchValues: true, PrefetchSize: 1024})
		defer it.Close()
		type kv struct{ k, v []byte }
		var batch []kv
		size := 0
		flush := func() error {
			if len(batch) == 0 {
				return nil
			}
			err := to.Update(ctx, false, func(t storage.Txn) error {
				for _, e := range batch {
					if err := t.Set(e.k, e.v); err != nil {
						return err
					}
				}
				return nil
			})
			batch, size = batch[:0], 0
			return err
		}
		for it.Rewind(); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			k := slices.Clone(it.Item().Key())
			batch = append(batch, kv{k, v})
			res.Keys++
			res.Bytes += int64(len(k) + len(v))
			if size += len(k) + len(v); size >= migrateBatchBytes {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		return flush()
	})
	if err != nil {
		return nil, fmt.Errorf("copy: %w", err)
	}
	w, err := newWriter(to)
	if err != nil {
		return nil, err
	}
	e := &AuditEntry{
		Time: time.Now().UTC(), Actor: actorID(nil), Action: "store.migrate", Decision: DecisionOK,
		Fields: []string{}, RecordIDs: []string{}, Target: target,
		Reason: fmt.Sprintf("copied whole from another store (%d keys, audit chain of %d entries verified before the copy)", res.Keys, src.Entries),
	}
	err = w.apply(&mutation{entry: e, size: 1024})
	w.close()
	if err != nil {
		return nil, fmt.Errorf("record the migration in the audit log: %w", err)
	}
	if res.Audit, err = VerifyAudit(ctx, to, pub); err != nil {
		return nil, err
	}
	if !res.Audit.OK || res.Audit.Entries != src.Entries+1 {
		return res, fmt.Errorf("the copied audit log does not verify whole (%d entries, source %d): %s", res.Audit.Entries, src.Entries, res.Audit.Reason)
	}
	return res, nil
}

// RestoreBackupToStore restores a backup into another, empty store (a
// PostgreSQL database): into a temporary Badger directory first, with
// every check RestoreBackup makes, then copied by Migrate, which verifies
// the chain again where it lands. tmpDir must have room for the vault.
func RestoreBackupToStore(ctx context.Context, path, tmpDir string, to storage.Store, target string, o RestoreOptions) (*RestoreResult, *MigrateResult, error) {
	dir, err := os.MkdirTemp(tmpDir, "agentvault-restore-")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(dir)
	res, err := RestoreBackup(ctx, path, filepath.Join(dir, "db"), o)
	if err != nil {
		return nil, nil, err
	}
	from, err := badgerstore.Open(filepath.Join(dir, "db"), badgerstore.Options{Logger: o.Logger, ReadOnly: true})
	if err != nil {
		return nil, nil, err
	}
	defer from.Close()
	mres, err := Migrate(ctx, from, to, target)
	return res, mres, err
}
