package badgerstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/agentvault/agentvault/storage"
)

// The store's write-ahead log: what makes a commit durable before it is
// acknowledged. Badger's own log is a memory-mapped file that grows into
// holes, so each msync of it also journals the blocks it allocates; this
// log writes with pwrite into space zeroed and synced beforehand, so each
// group fdatasync writes data blocks and nothing else (BenchmarkDurableAppend
// measures the two). Badger keeps its log, unsynced: a checkpoint syncs it
// now and then (DB.Sync and the set-aside memtables' logs), and the
// segments written before the checkpoint began are then deleted. Opening
// the store replays what is left into Badger, in commit order: every
// transaction acknowledged since the last checkpoint, some perhaps again,
// which is harmless, since each record holds the values it wrote, not
// changes to them.
//
// A segment is a file wal/<id>.seg of at most segSize bytes, its ids
// increasing. It holds records, one per committed transaction, and zeros
// after the last:
//
//	record: length uint32 | crc32c(body) uint32 | body (length bytes)
//	body:   op*
//	op:     1 | uvarint key length | key | uvarint value length | value   (set)
//	        2 | uvarint key length | key                                  (delete)
//
// A zero length ends a segment. A record is written whole into one
// segment; the next segment takes writes only after the last one's
// records are synced, so a crash can leave a torn record only at the end
// of the newest segment that has any.

const (
	opSet    = 1
	opDelete = 2

	recordHeader = 8
	// zeroStep is how far ahead of the write position a segment is
	// zeroed and synced at a time.
	zeroStep = 2 << 20
	// defaultSegmentSize is a segment's size unless a transaction needs
	// more (see segmentSize).
	defaultSegmentSize = 16 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// segmentSize is the log's segment size for a memtable of memTable
// bytes: a transaction Badger takes (at most 15% of a memtable) fits in
// one segment with room to spare.
func segmentSize(memTable int64) int64 {
	return max(defaultSegmentSize, memTable/4)
}

// appendOp adds one set (value non-nil) or delete to a record body.
func appendOp(body []byte, kind byte, key, value []byte) []byte {
	body = append(body, kind)
	body = binary.AppendUvarint(body, uint64(len(key)))
	body = append(body, key...)
	if kind == opSet {
		body = binary.AppendUvarint(body, uint64(len(value)))
		body = append(body, value...)
	}
	return body
}

// appendRecord frames body as a record.
func appendRecord(dst, body []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(body)))
	dst = binary.LittleEndian.AppendUint32(dst, crc32.Checksum(body, castagnoli))
	return append(dst, body...)
}

// errTorn reports a record that is not whole: where a crash stopped a
// write, or damage.
var errTorn = errors.New("torn or damaged record")

// nextRecord reads the record at the start of b. It returns its body and
// the bytes it takes, or n == 0 at the end of the segment (a zero length
// or too few bytes for a header), or errTorn.
func nextRecord(b []byte) (body []byte, n int, err error) {
	if len(b) < recordHeader {
		return nil, 0, nil
	}
	length := binary.LittleEndian.Uint32(b)
	if length == 0 {
		return nil, 0, nil
	}
	if uint64(length) > uint64(len(b)-recordHeader) {
		return nil, 0, errTorn
	}
	body = b[recordHeader : recordHeader+int(length)]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(b[4:]) {
		return nil, 0, errTorn
	}
	return body, recordHeader + int(length), nil
}

// eachOp calls fn for every op of a record body, value nil for a delete.
func eachOp(body []byte, fn func(kind byte, key, value []byte) error) error {
	for len(body) > 0 {
		kind := body[0]
		if kind != opSet && kind != opDelete {
			return fmt.Errorf("%w: op %d", errTorn, kind)
		}
		body = body[1:]
		key, rest, ok := uvarintBytes(body)
		if !ok {
			return fmt.Errorf("%w: key", errTorn)
		}
		body = rest
		var value []byte
		if kind == opSet {
			if value, body, ok = uvarintBytes(body); !ok {
				return fmt.Errorf("%w: value", errTorn)
			}
			if value == nil {
				value = []byte{}
			}
		}
		if err := fn(kind, key, value); err != nil {
			return err
		}
	}
	return nil
}

// uvarintBytes reads a length-prefixed byte string.
func uvarintBytes(b []byte) (s, rest []byte, ok bool) {
	n, w := binary.Uvarint(b)
	if w <= 0 || n > uint64(len(b)-w) {
		return nil, nil, false
	}
	return b[w : w+int(n)], b[w+int(n):], true
}

// segment names: 16 hex digits, so the names sort as the ids do.
func segmentName(id uint64) string { return fmt.Sprintf("%016x.seg", id) }

// listSegments returns the ids of dir's segments, in order.
func listSegments(dir string) ([]uint64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var ids []uint64
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".seg")
		if !ok {
			continue
		}
		id, err := strconv.ParseUint(name, 16, 64)
		if err != nil {
			return nil, fmt.Errorf("write-ahead log %s: unexpected file %s", dir, e.Name())
		}
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids, nil
}

// readSegments calls fn with every whole record of the segments in dir,
// in order. A torn record ends the log: a crash during a flush can leave
// one, and whatever that flush wrote after it, none of it acknowledged
// (torn describes where, for the log). A record in a later segment than
// a torn one is damage, since a segment takes writes only after the one
// before it is synced, and readSegments fails rather than skip it.
func readSegments(dir string, fn func(body []byte) error) (records int, torn string, err error) {
	ids, err := listSegments(dir)
	if err != nil {
		return 0, "", err
	}
	for _, id := range ids {
		path := filepath.Join(dir, segmentName(id))
		data, err := os.ReadFile(path)
		if err != nil {
			return records, torn, err
		}
		if torn != "" {
			if _, n, _ := nextRecord(data); n > 0 {
				return records, torn, fmt.Errorf("write-ahead log: %s has records after the damaged record at %s", path, torn)
			}
			continue
		}
		off := 0
		for {
			body, n, err := nextRecord(data[off:])
			if errors.Is(err, errTorn) {
				torn = fmt.Sprintf("%s byte %d", path, off)
				break
			}
			if n == 0 {
				break
			}
			if err := fn(body); err != nil {
				return records, torn, fmt.Errorf("write-ahead log %s byte %d: %w", path, off, err)
			}
			records++
			off += n
		}
	}
	return records, torn, nil
}

// walWriter appends records to the newest segment (one caller at a
// time).
type walWriter struct {
	dir     string
	segSize int64

	buf      []byte // the record being written
	seg      *os.File
	segID    uint64
	off      int64 // where the next record goes
	zeroedTo int64 // the segment's bytes zeroed and synced so far
}

// openWAL starts a new segment after the ids in dir.
func openWAL(dir string, segSize int64, lastID uint64) (*walWriter, error) {
	w := &walWriter{dir: dir, segSize: segSize}
	if err := w.startSegment(lastID + 1); err != nil {
		return nil, err
	}
	return w, nil
}

// notWritten marks an append's failure before any byte of its record
// was written (a new segment or its zeroing, on a full disk): the log is
// as it was, and the next append may succeed.
type notWritten struct{ error }

func (e notWritten) Unwrap() error { return e.error }

// append writes a record and makes it durable. switched reports that it
// began a new segment: every record in the older ones is then durable
// and was committed to Badger before this call. An error other than
// notWritten leaves the log unknown.
func (w *walWriter) append(body []byte) (switched bool, err error) {
	w.buf = appendRecord(w.buf[:0], body)
	if int64(len(w.buf)) > w.segSize {
		return false, notWritten{fmt.Errorf("%w: a %d-byte transaction does not fit a %d-byte write-ahead log segment", storage.ErrTooBig, len(w.buf), w.segSize)}
	}
	if w.off+int64(len(w.buf)) > w.segSize {
		// The record starts a new segment; the records before it are
		// synced already, so a torn record can only be the newest one.
		if err := w.startSegment(w.segID + 1); err != nil {
			return false, notWritten{err}
		}
		switched = true
	}
	if end := w.off + int64(len(w.buf)); end > w.zeroedTo {
		if err := w.zeroAhead(end); err != nil {
			return switched, notWritten{err}
		}
	}
	if _, err := w.seg.WriteAt(w.buf, w.off); err != nil {
		return switched, fmt.Errorf("write-ahead log write: %w", err)
	}
	w.off += int64(len(w.buf))
	if err := unix.Fdatasync(int(w.seg.Fd())); err != nil {
		return switched, fmt.Errorf("write-ahead log fdatasync: %w", err)
	}
	if cap(w.buf) > 4<<20 {
		w.buf = nil // a large batch's buffer is not kept
	}
	return switched, nil
}

// zeroAhead writes zeros from zeroedTo past end (in zeroStep steps, at
// most to the segment's size) and syncs them with the file's new size,
// so the fdatasyncs that follow have no block allocation or size to
// record.
func (w *walWriter) zeroAhead(end int64) error {
	to := min(w.segSize, max(end, w.zeroedTo+zeroStep))
	zeros := zeroBlock[:]
	for off := w.zeroedTo; off < to; off += int64(len(zeros)) {
		chunk := zeros[:min(int64(len(zeros)), to-off)]
		if _, err := w.seg.WriteAt(chunk, off); err != nil {
			return fmt.Errorf("write-ahead log zeroing: %w", err)
		}
	}
	if err := w.seg.Sync(); err != nil {
		return fmt.Errorf("write-ahead log zeroing: %w", err)
	}
	w.zeroedTo = to
	return nil
}

// zeroBlock is what zeroAhead writes from (never written to).
var zeroBlock [256 << 10]byte

// startSegment creates segment id (empty; zeroed as it is written) and
// makes it the one written to, with its name on disk.
func (w *walWriter) startSegment(id uint64) error {
	f, err := os.OpenFile(filepath.Join(w.dir, segmentName(id)), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("write-ahead log: %w", err)
	}
	if err := fsync(w.dir); err != nil {
		f.Close()
		return fmt.Errorf("write-ahead log: %w", err)
	}
	if w.seg != nil {
		w.seg.Close()
	}
	w.seg, w.segID, w.off, w.zeroedTo = f, id, 0, 0
	return nil
}

func (w *walWriter) close() error {
	if w.seg == nil {
		return nil
	}
	err := w.seg.Close()
	w.seg = nil
	return err
}

// removeSegments deletes dir's segments with ids below before.
func removeSegments(dir string, before uint64) error {
	ids, err := listSegments(dir)
	if err != nil {
		return err
	}
	removed := false
	for _, id := range ids {
		if id >= before {
			break
		}
		if err := os.Remove(filepath.Join(dir, segmentName(id))); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		removed = true
	}
	if removed {
		return fsync(dir)
	}
	return nil
}

// walHasRecords reports whether dir holds a segment with a record: what
// a read-only open cannot replay.
func walHasRecords(dir string) (bool, error) {
	ids, err := listSegments(dir)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	for _, id := range ids {
		f, err := os.Open(filepath.Join(dir, segmentName(id)))
		if err != nil {
			return false, err
		}
		head := make([]byte, recordHeader)
		_, err = io.ReadFull(f, head)
		f.Close()
		if err == nil && binary.LittleEndian.Uint32(head) != 0 {
			return true, nil
		}
	}
	return false, nil
}
