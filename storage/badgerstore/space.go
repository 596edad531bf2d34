package badgerstore

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/agentvault/agentvault/storage"
)

// Badger writes through memory-mapped files: a write that finds the
// filesystem full faults (SIGBUS) and kills the process. So writes stop
// while there is still room: every write needs Reserve bytes free, and
// the small audit-only writes of reads and detokenizes (an entry and a
// grant's use count) go on until a quarter of it is left, for Badger's own
// flushes and compactions.

// freeBytes is what an unprivileged writer may still use in dir.
func freeBytes(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// FreeBytes is the free space of the data directory's filesystem.
func (s *Store) FreeBytes() (int64, error) { return freeBytes(s.dir) }

// CheckSpace refuses a write that would eat into the reserve; auditOnly
// writes may go down to a quarter of it. With no reserve set it checks
// nothing.
func (s *Store) CheckSpace(auditOnly bool) error {
	reserve := s.reserve.Load()
	if reserve <= 0 {
		return nil
	}
	free, err := freeBytes(s.dir)
	if err != nil {
		return fmt.Errorf("%w: statfs: %v", storage.ErrUnavailable, err)
	}
	need := reserve
	if auditOnly {
		need = reserve / 4
	}
	if free < need {
		s.fullRefusals.Inc()
		return &storageFullError{free: free, need: need}
	}
	return nil
}

// storageFullError says how much is free and how much a write needs. It
// is storage.ErrStorageFull to errors.Is.
type storageFullError struct{ free, need int64 }

func (e *storageFullError) Error() string {
	return fmt.Sprintf("storage full: %d bytes free, writes need %d (the reserve that keeps the database safe); free space or grow the volume, nothing needs a restart", e.free, e.need)
}

func (e *storageFullError) Is(target error) bool {
	return target == storage.ErrStorageFull || target == storage.ErrUnavailable // what ErrStorageFull wraps
}
