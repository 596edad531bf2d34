package vault

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sys/unix"

	"github.com/agentvault/agentvault/detect"
	"github.com/agentvault/agentvault/internal/pgtest"
	"github.com/agentvault/agentvault/storage"
	"github.com/agentvault/agentvault/storage/badgerstore"
	"github.com/agentvault/agentvault/tokenizer"
	"github.com/agentvault/agentvault/vault/auditlog"
)

var benchSchema = Collection{Name: "bench", Fields: []Field{
	{Name: "ref", Type: TypeString},
	{Name: "secret", Type: TypeString, Sensitive: true},
}}

func benchEnv(b *testing.B, c Collection) *env {
	e := &env{t: &testing.T{}, dir: b.TempDir()}
	e.open()
	b.Cleanup(e.close)
	if _, err := e.svc.CreateCollection(context.Background(), RequestMeta{}, c); err != nil {
		b.Fatal(err)
	}
	return e
}

func batch(n int, f func(i int) map[string]json.RawMessage) []map[string]json.RawMessage {
	out := make([]map[string]json.RawMessage, n)
	for i := range out {
		out[i] = f(i)
	}
	return out
}

// BenchmarkCreateRecordSingle is one durable single-record create per
// operation, from parallel goroutines (group commit shares fsyncs).
func BenchmarkCreateRecordSingle(b *testing.B) {
	e := benchEnv(b, benchSchema)
	in := batch(1, func(i int) map[string]json.RawMessage { return fields("ref", "r", "secret", "value-00000001") })
	b.ReportAllocs()
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := e.svc.CreateRecords(context.Background(), RequestMeta{}, "bench", in); err != nil {
				b.Error(err)
			}
		}
	})
}

// BenchmarkCreateRecordsBatch stores 1,000 records with one sensitive field
// each per operation; values/s is reported.
func BenchmarkCreateRecordsBatch(b *testing.B) {
	for _, kind := range []tokenizer.Kind{tokenizer.KindRandom, tokenizer.KindDeterministic} {
		b.Run(string(kind), func(b *testing.B) {
			c := benchSchema
			c.Fields = []Field{benchSchema.Fields[0], {Name: "secret", Type: TypeString, Sensitive: true, Token: kind}}
			e := benchEnv(b, c)
			in := batch(1000, func(i int) map[string]json.RawMessage {
				return fields("ref", fmt.Sprint("r", i), "secret", fmt.Sprintf("value-%08d", i))
			})
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := cpuTime()
			b.SetParallelism(2) // four writers on two cores, as BenchmarkStoreFloorBatch
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := e.svc.CreateRecords(context.Background(), RequestMeta{}, "bench", in); err != nil {
						b.Error(err)
						return
					}
				}
			})
			values := float64(b.N * 1000)
			b.ReportMetric(values/b.Elapsed().Seconds(), "values/s")
			b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/values, "cpu-µs/value")
		})
	}
}

// BenchmarkLookupValue resolves a token and decrypts its value (the core of
// detokenization, without grants or audit).
func BenchmarkLookupValue(b *testing.B) {
	e := benchEnv(b, benchSchema)
	recs, err := e.svc.CreateRecords(context.Background(), RequestMeta{}, "bench", batch(1000, func(i int) map[string]json.RawMessage {
		return fields("secret", fmt.Sprintf("value-%08d", i))
	}))
	if err != nil {
		b.Fatal(err)
	}
	toks := make([]string, len(recs))
	for i, r := range recs {
		json.Unmarshal(r.Fields["secret"], &toks[i])
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, _, err := e.svc.lookupValue(toks[i%len(toks)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// The StoreFloor benchmarks are the storage floor under record creation:
// the Badger writes creates make (per record a record entry and a point
// token-index entry of the stored sizes, plus audit entries of the stored
// sizes), through the same group-committed Store, with none of the vault's
// own work: no parsing, encryption, token drawing, hashing or HTTP. Their
// rates and CPU per value bound what any change above the store can reach
// on this machine; docs/BENCHMARKS.md sets them beside the load rows.

// BenchmarkStoreFloorBatch writes what a 1,000-record batch writes: 1,000
// records and one compressed audit entry naming them, from four writers.
func BenchmarkStoreFloorBatch(b *testing.B) { storeFloor(b, 1000, false) }

// BenchmarkStoreFloorSingle writes what single-record creates write, each
// with its own audit entry, grouped 16 to a transaction (about what the
// vault's single writer groups under the load tool's create rows).
func BenchmarkStoreFloorSingle(b *testing.B) { storeFloor(b, 16, true) }

func storeFloor(b *testing.B, perTxn int, entryPerRecord bool) {
	store, err := badgerstore.Open(b.TempDir(), badgerstore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	const coll = "load_1795565358222682303"
	cipher := make([]byte, 45)
	hash := strings.Repeat("0f", 32)
	var seq atomic.Uint64
	// An audit entry as the vault writes it for a create.
	audit := func(ids []string) ([]byte, []byte) {
		s := seq.Add(1)
		canon, _ := json.Marshal(AuditEntry{Seq: s, Time: time.Now(), Actor: uuid.NewString(), Action: "records.create", Decision: DecisionOK,
			Collection: coll, Fields: []string{"ref", "secret"}, RecordIDs: ids, RequestID: uuid.NewString(),
			RemoteAddr: "127.0.0.1:54321", PrevHash: hash, Hash: hash})
		return auditKey(s), auditlog.Encode(canon)
	}
	// write stores one transaction's worth of values.
	write := func(ids []string) error {
		return store.Update(context.Background(), false, func(txn storage.Txn) error {
			for i := range ids {
				ids[i] = uuid.Must(uuid.NewV7()).String()
				tok := tokenizer.Random()
				if err := txn.Set(pointTokenKey(tok), tokenIndexValue(tok, coll, ids[i], "secret", cipher)); err != nil {
					return err
				}
				sr := storedRecord{Created: time.Now(), Fields: []storedField{{Name: "ref", Value: json.RawMessage(`"r0"`)}, {Name: "secret", Token: tok}}}
				if err := txn.Set(recordKey(coll, ids[i]), encodeRecord(&sr)); err != nil {
					return err
				}
				if entryPerRecord {
					if err := txn.Set(audit(ids[i : i+1])); err != nil {
						return err
					}
				}
			}
			if entryPerRecord {
				return nil
			}
			return txn.Set(audit(ids))
		})
	}
	if b.N > 1 { // not the one-op probe run the testing package starts with
		prefillFloor(b, perTxn, write)
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	b.SetParallelism(2) // four writers on two cores, like the load tool's batch rows
	b.RunParallel(func(pb *testing.PB) {
		ids := make([]string, perTxn)
		for pb.Next() {
			if err := write(ids); err != nil {
				b.Error(err)
				return
			}
		}
	})
	values := float64(b.N * perTxn)
	b.ReportMetric(values/b.Elapsed().Seconds(), "values/s")
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/values, "cpu-µs/value")
}

// prefillFloor stores AGENTVAULT_FLOOR_PREFILL values (none when unset)
// before a floor benchmark's timer and CPU count start, from four writers.
// A store's CPU per value grows with what it already holds (compaction
// rewrites more levels), so a floor set beside a load row that ran on a
// server already holding N values is measured after the same N.
func prefillFloor(b *testing.B, perTxn int, write func(ids []string) error) {
	n, _ := strconv.Atoi(os.Getenv("AGENTVAULT_FLOOR_PREFILL"))
	txns := n / perTxn
	if txns <= 0 {
		return
	}
	var next atomic.Int64
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			ids := make([]string, perTxn)
			for next.Add(1) <= int64(txns) {
				if err := write(ids); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
}

// cpuTime is this process's user and system CPU time (every goroutine,
// Badger's flushes and compactions included).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkDurableAppend compares the two ways to make an append durable
// that sit under the StoreFloor numbers: Badger's (copy into a memory-mapped
// log file, then msync the mapping) and a plain append-only file (write,
// then fdatasync). Each operation appends 40 KiB, about what one group
// commit of single-record creates holds, and waits until it is on disk.
func BenchmarkDurableAppend(b *testing.B) {
	chunk := bytes.Repeat([]byte("agentvault-wal-"), 40<<10/15)
	b.Run("mmap-msync", func(b *testing.B) {
		f, err := os.Create(filepath.Join(b.TempDir(), "log"))
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		size := (b.N + 1) * len(chunk)
		if err := f.Truncate(int64(size)); err != nil {
			b.Fatal(err)
		}
		m, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			b.Fatal(err)
		}
		defer unix.Munmap(m)
		cpu0 := cpuTime()
		b.ResetTimer()
		for i := range b.N {
			copy(m[i*len(chunk):], chunk)
			if err := unix.Msync(m, unix.MS_SYNC); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
	})
	// What a log of its own could do that Badger's memory-mapped one
	// cannot: write into a file zeroed and synced beforehand (as
	// PostgreSQL recycles its WAL segments), so that fdatasync has no
	// block allocation or file size to journal.
	b.Run("pwrite-fdatasync-prezeroed", func(b *testing.B) {
		f, err := os.Create(filepath.Join(b.TempDir(), "log"))
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		zero := make([]byte, 1<<20)
		for n := 0; n < (b.N+1)*len(chunk); n += len(zero) {
			if _, err := f.Write(zero); err != nil {
				b.Fatal(err)
			}
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		cpu0 := cpuTime()
		b.ResetTimer()
		for i := range b.N {
			if _, err := f.WriteAt(chunk, int64(i*len(chunk))); err != nil {
				b.Fatal(err)
			}
			if err := unix.Fdatasync(int(f.Fd())); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
	})
	b.Run("write-fdatasync", func(b *testing.B) {
		f, err := os.Create(filepath.Join(b.TempDir(), "log"))
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		cpu0 := cpuTime()
		b.ResetTimer()
		for range b.N {
			if _, err := f.Write(chunk); err != nil {
				b.Fatal(err)
			}
			if err := unix.Fdatasync(int(f.Fd())); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
	})
}

// BenchmarkBackup takes an online backup of a vault of 100,000 records to
// a file, restores it into a new directory, and, for comparison in the
// same run, copies the stopped database's files with fsync: what backing
// up costs without an online backup (stop the server, copy, start it).
// records/s is per 100,000-record vault.
func BenchmarkBackup(b *testing.B) {
	const records = 100000
	e := benchEnv(b, benchSchema)
	for i := 0; i < records; i += 1000 {
		in := batch(1000, func(j int) map[string]json.RawMessage {
			return fields("ref", fmt.Sprint("r", i+j), "secret", fmt.Sprintf("value-%08d", i+j))
		})
		if _, err := e.svc.CreateRecords(context.Background(), RequestMeta{}, "bench", in); err != nil {
			b.Fatal(err)
		}
	}
	if err := e.badger().DB().Sync(); err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	backupFile := filepath.Join(dir, "bench.avbackup")
	backup := func() { writeBackupFile(b, e.svc, backupFile) }
	perVault := func(b *testing.B) {
		b.ReportMetric(float64(b.N*records)/b.Elapsed().Seconds(), "records/s")
	}
	b.Run("online", func(b *testing.B) {
		for b.Loop() {
			backup()
		}
		perVault(b)
		if st, err := os.Stat(backupFile); err == nil {
			b.ReportMetric(float64(st.Size())/records, "file-B/record")
		}
	})
	b.Run("restore", func(b *testing.B) {
		backup()
		i := 0
		for b.Loop() {
			i++
			if _, err := RestoreBackup(context.Background(), backupFile, filepath.Join(dir, fmt.Sprint("r", i)), RestoreOptions{Keys: e.svc.keys}); err != nil {
				b.Fatal(err)
			}
		}
		perVault(b)
	})
	b.Run("copy-files", func(b *testing.B) {
		src := filepath.Join(e.dir, "db")
		// A stopped server's files: a live Badger directory holds a 2 GiB
		// preallocated value log and an mmap'd memtable, and copying it is
		// not consistent.
		e.close()
		i := 0
		for b.Loop() {
			i++
			if err := copyDir(src, filepath.Join(dir, fmt.Sprint("c", i))); err != nil {
				b.Fatal(err)
			}
		}
		perVault(b)
	})
}

// copyDir copies a directory's files and syncs each (no subdirectories:
// Badger keeps none).
func copyDir(src, dst string) error {
	if err := os.Mkdir(dst, 0o700); err != nil {
		return err
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, ent := range ents {
		if ent.IsDir() {
			continue
		}
		in, err := os.Open(filepath.Join(src, ent.Name()))
		if err != nil {
			return err
		}
		out, err := os.Create(filepath.Join(dst, ent.Name()))
		if err == nil {
			_, err = io.Copy(out, in)
		}
		in.Close()
		if err == nil {
			err = out.Sync()
		}
		if out != nil {
			out.Close()
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// BenchmarkRedact redacts a 4 KB prompt holding 40 values (emails, cards,
// IBANs, SSNs) in token mode once they are stored: detection, 40
// deterministic tokens and the store lookups that find them held already.
func BenchmarkRedact(b *testing.B) {
	e := benchEnv(b, benchSchema)
	var sb strings.Builder
	for i := range 10 {
		fmt.Fprintf(&sb, "Ticket %d: customer p%d@example.com paid with 4111 1111 1111 1111 from DE89 3704 0044 0532 0130 00, SSN 123-45-%04d; please check the refund. ", i, i, 1000+i)
	}
	for sb.Len() < 4096 {
		sb.WriteString("Nothing sensitive in this sentence at all. ")
	}
	req := RedactRequest{Text: sb.String()}
	ctx := context.Background()
	if _, err := e.svc.Redact(ctx, RequestMeta{}, req); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(req.Text)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := e.svc.Redact(ctx, RequestMeta{}, req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFindKnown is detection over the detect package's corpus (180
// KB of chat, tickets, emails, logs and code) with N values held in detect
// fields, in MB/s of text on one core: "patterns+known" is what redaction
// runs, "known" the known-value matching alone (types naming the field).
// The set holds N keyed hashes of one- to three-word values; the cost must
// not grow with N.
func BenchmarkFindKnown(b *testing.B) {
	text := corpusText(b)
	for _, n := range []int{0, 1_000, 100_000, 1_000_000} {
		e := benchEnv(b, clientsSchema)
		if n > 0 {
			fillKnown(b, e, n)
		}
		m, err := e.svc.knownMatcher(nil)
		if err != nil {
			b.Fatal(err)
		}
		runs := []struct {
			name string
			o    detect.Options
		}{{"patterns+known", detect.Options{}}}
		if n > 0 {
			runs = append(runs, struct {
				name string
				o    detect.Options
			}{"known", detect.Options{Types: []string{"clients.name"}}})
		}
		for _, r := range runs {
			if m != nil {
				r.o.Known = m
			}
			b.Run(fmt.Sprintf("%s/values=%d", r.name, n), func(b *testing.B) {
				b.SetBytes(int64(len(text)))
				b.ReportAllocs()
				for b.Loop() {
					detect.Find(text, r.o)
				}
				if m != nil && m.err != nil {
					b.Fatal(m.err)
				}
			})
		}
	}
}

// fillKnown stores a few real detect values and fills the set up to n
// hashes of one- to three-word values, as n stored values would.
func fillKnown(b *testing.B, e *env, n int) {
	recs := batch(100, func(i int) map[string]json.RawMessage {
		return fields("name", fmt.Sprintf("Client Number%d", i), "account", fmt.Sprintf("ACC-%05d", i))
	})
	if _, err := e.svc.CreateRecords(context.Background(), RequestMeta{}, "clients", recs); err != nil {
		b.Fatal(err)
	}
	h := make([]byte, knownHashLen)
	for i := e.svc.known.size(); i < n; i++ {
		binary.LittleEndian.PutUint64(h, uint64(i)*0x9e3779b97f4a7c15)
		e.svc.known.change(h, 1+i%3, 1)
	}
}

func corpusText(b *testing.B) string {
	raw, err := os.ReadFile("../detect/testdata/corpus.jsonl")
	if err != nil {
		b.Fatal(err)
	}
	var texts []string
	for line := range bytes.Lines(raw) {
		var s struct{ Text string }
		if err := json.Unmarshal(line, &s); err != nil {
			b.Fatal(err)
		}
		texts = append(texts, s.Text)
	}
	return strings.Join(texts, "\n")
}

// BenchmarkAuditAppend is the audit chain's append alone: an audited
// mutation that writes nothing else, from 64 goroutines, through the
// single writer (its group commit) on each store; on PostgreSQL every
// batch also takes the cross-node write lock and reads the chain's head.
// entries/s is what the chain can take.
func BenchmarkAuditAppend(b *testing.B) {
	for _, store := range []string{"badger", "postgres"} {
		b.Run("store="+store, func(b *testing.B) {
			if store == "postgres" && !pgtest.Available() {
				b.Skip("AGENTVAULT_POSTGRES_URL is not set (scripts/bench.sh sets it)")
			}
			t := &testing.T{}
			e := &env{t: t, dir: b.TempDir()}
			b.Setenv("AGENTVAULT_TEST_STORE", store)
			if store == "postgres" {
				e.pgURL = pgtest.Database(b)
			}
			e.open()
			b.Cleanup(e.close)
			b.SetParallelism(32)
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					m := &mutation{entry: e.svc.newEntry(RequestMeta{}, "bench.append"), size: 512}
					if err := e.svc.writer.apply(m); err != nil {
						b.Error(err)
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "entries/s")
		})
	}
}
