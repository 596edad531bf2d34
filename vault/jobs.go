package vault

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/agentvault/agentvault/keys"
	"github.com/agentvault/agentvault/storage"
)

// Job statuses.
const (
	JobRunning = "running"
	JobDone    = "done"
	JobFailed  = "failed"
)

// Job is a background re-encryption of one collection under its primary
// data key. Its progress is stored with every batch, in the batch's own
// transaction, so after a crash or restart it resumes where the last
// durable batch ended.
type Job struct {
	ID          string     `json:"job_id"`
	Kind        string     `json:"kind"`
	Collection  string     `json:"collection"`
	Status      string     `json:"status"`
	Done        int64      `json:"done"`  // values re-encrypted
	Total       int64      `json:"total"` // values not under the primary key when the job started
	Records     int64      `json:"records_scanned"`
	Skipped     int64      `json:"skipped"` // values that changed or failed their integrity check meanwhile
	TargetKeyID uint32     `json:"target_key_id"`
	Cursor      string     `json:"cursor,omitempty"` // last record id done
	RequestedBy string     `json:"requested_by,omitempty"`
	StartedAt   time.Time  `json:"started_at"`
	UpdatedAt   time.Time  `json:"updated_at"`
	FinishedAt  *time.Time `json:"finished_at,omitempty"`
	Error       string     `json:"error,omitempty"`
	Resumed     int        `json:"resumed,omitempty"` // times picked up again after a restart
	// Node runs the job while its lease lasts (LeaseUntil), renewing it
	// with every batch; when it lapses (the node died), another node
	// takes the job over and finishes it.
	Node       string    `json:"node,omitempty"`
	LeaseUntil time.Time `json:"lease_until,omitzero"`
}

// holds reports whether node may run j at now: it holds the lease, or
// the lease has lapsed.
func (j *Job) holds(node string, now time.Time) bool {
	return j.Node == node || !now.Before(j.LeaseUntil)
}

// errLeaseLost stops a job whose lease another node has taken.
var errLeaseLost = errors.New("re-encryption job taken over by another node")

// readJob reads a job in txn.
func readJob(txn storage.Txn, id string) (*Job, error) {
	item, err := txn.Get(jobKey(id))
	if err != nil {
		return nil, err
	}
	var j Job
	if err := item.Value(func(v []byte) error { return json.Unmarshal(v, &j) }); err != nil {
		return nil, err
	}
	return &j, nil
}

// checkLease refuses to go on with j unless this node may run it, and
// renews the lease; in the writer's transaction.
func (s *Service) checkLease(txn storage.Txn, j *Job, now time.Time) error {
	stored, err := readJob(txn, j.ID)
	if err != nil {
		return err
	}
	if stored.Status != JobRunning || !stored.holds(s.node, now) {
		return reject(errLeaseLost)
	}
	j.Node, j.LeaseUntil = s.node, now.Add(s.cfg.JobLease)
	return nil
}

func jobKey(id string) []byte { return []byte("j/" + id) }

func putJob(txn storage.Txn, j *Job) error {
	b, err := json.Marshal(j)
	if err != nil {
		return err
	}
	return txn.Set(jobKey(j.ID), b)
}

// jobRunner knows which collections have a job running.
type jobRunner struct {
	mu     sync.Mutex
	active map[string]string // collection -> running job id
}

// GetJob returns a job.
func (s *Service) GetJob(ctx context.Context, id string) (*Job, error) {
	var j Job
	err := s.store.View(func(txn storage.Txn) error {
		item, err := txn.Get(jobKey(id))
		if errors.Is(err, storage.ErrNotFound) {
			return notFound("job_not_found", "no job %q", id)
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error { return json.Unmarshal(v, &j) })
	})
	if err != nil {
		return nil, err
	}
	return &j, nil
}

// ListJobs returns every job, newest first.
func (s *Service) ListJobs(ctx context.Context) ([]Job, error) {
	out := []Job{}
	err := s.store.View(func(txn storage.Txn) error {
		it := txn.NewIterator(storage.IterOptions{Prefix: []byte("j/"), PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var j Job
			if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &j) }); err != nil {
				return err
			}
			out = append(out, j)
		}
		return nil
	})
	slices.SortFunc(out, func(a, b Job) int { return b.StartedAt.Compare(a.StartedAt) })
	return out, err
}

// StartReencrypt starts re-encrypting every value of a collection that is
// not under its primary data key. One job runs per collection at a time.
func (s *Service) StartReencrypt(ctx context.Context, meta RequestMeta, coll string) (*Job, error) {
	c, err := s.collection(coll)
	if err != nil {
		return nil, err
	}
	s.jobs.mu.Lock()
	defer s.jobs.mu.Unlock()
	if id, ok := s.jobs.active[coll]; ok {
		return nil, conflict("job_running", "re-encryption job %s is already running for collection %q", id, coll)
	}
	if s.bg.Err() != nil {
		return nil, fmt.Errorf("%w: shutting down", ErrUnavailable)
	}
	primary := c.dek().PrimaryID()
	now := s.now()
	j := &Job{ID: uuid.NewString(), Kind: "reencrypt", Collection: coll, Status: JobRunning, TargetKeyID: primary,
		RequestedBy: actorID(meta.Actor), StartedAt: now, UpdatedAt: now, Node: s.node, LeaseUntil: now.Add(s.cfg.JobLease)}
	e := s.newEntry(meta, "key.reencrypt")
	e.Collection, e.Target = coll, "job "+j.ID
	err = s.writer.apply(&mutation{entry: e, size: 2048, prepare: func(txn storage.Txn) error {
		// One job per collection, on whichever node: the writer's
		// transactions are one at a time across nodes.
		if other, err := runningJob(txn, coll); err != nil {
			return err
		} else if other != "" {
			return reject(conflict("job_running", "re-encryption job %s is already running for collection %q", other, coll))
		}
		counts, err := keyCounts(txn, coll)
		if err != nil {
			return err
		}
		for id, n := range counts {
			if id != primary {
				j.Total += n
			}
		}
		e.Reason = fmt.Sprintf("started: %d values to re-encrypt under key %d", j.Total, primary)
		return putJob(txn, j)
	}})
	if err != nil {
		return nil, err
	}
	out := *j // the job's goroutine owns j from here
	s.runJob(j)
	return &out, nil
}

// runningJob returns the id of a running job of the collection, if any.
func runningJob(txn storage.Txn, coll string) (string, error) {
	it := txn.NewIterator(storage.IterOptions{Prefix: []byte("j/"), PrefetchValues: true})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		var j Job
		if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &j) }); err != nil {
			return "", err
		}
		if j.Status == JobRunning && j.Collection == coll {
			return j.ID, nil
		}
	}
	return "", nil
}

// resumeJobs picks up jobs that were running when the process stopped:
// at start, and, with several nodes, periodically, the jobs whose node
// let its lease lapse. On a store of its own a node takes every running
// job at start (no other node can hold one).
func (s *Service) resumeJobs() error {
	jobs, err := s.ListJobs(context.Background())
	if err != nil {
		return err
	}
	now := s.now()
	for i := range jobs {
		j := jobs[i]
		if j.Status != JobRunning || (s.cfg.Shared && !j.holds(s.node, now)) {
			continue
		}
		s.jobs.mu.Lock()
		_, mine := s.jobs.active[j.Collection]
		s.jobs.mu.Unlock()
		if mine {
			continue
		}
		if err := s.claimJob(&j); err != nil {
			if !errors.Is(err, errLeaseLost) {
				s.log.Warn("claim re-encryption job", "job_id", j.ID, "err", err)
			}
			continue
		}
		s.log.Info("resuming re-encryption", "job_id", j.ID, "collection", j.Collection, "done", j.Done, "total", j.Total)
		s.jobs.mu.Lock()
		s.runJob(&j)
		s.jobs.mu.Unlock()
	}
	return nil
}

// claimJob takes a job's lease for this node, with an audit entry.
func (s *Service) claimJob(j *Job) error {
	now := s.now()
	next := *j
	e := s.newEntry(RequestMeta{}, "key.reencrypt")
	e.Collection, e.Target = j.Collection, "job "+j.ID
	err := s.writer.apply(&mutation{entry: e, size: 2048, prepare: func(txn storage.Txn) error {
		stored, err := readJob(txn, j.ID)
		if err != nil {
			return err
		}
		if s.cfg.Shared && (stored.Status != JobRunning || !stored.holds(s.node, now)) {
			return reject(errLeaseLost)
		}
		next = *stored
		prev := next.Node
		next.Node, next.LeaseUntil, next.Resumed, next.UpdatedAt = s.node, now.Add(s.cfg.JobLease), stored.Resumed+1, now
		e.Reason = fmt.Sprintf("resumed at %d of %d values", next.Done, next.Total)
		if prev != "" && prev != s.node {
			e.Reason += " (taken over from node " + prev + ", whose lease lapsed)"
		}
		return putJob(txn, &next)
	}})
	if err != nil {
		return err
	}
	*j = next
	return nil
}

// runJob starts a job's goroutine; s.jobs.mu is held. While the service
// is closing it starts nothing: the stored job resumes at the next start.
func (s *Service) runJob(j *Job) {
	if _, running := s.jobs.active[j.Collection]; running {
		return
	}
	s.jobs.active[j.Collection] = j.ID
	started := s.goBackground(func(ctx context.Context) {
		err := s.reencrypt(ctx, j)
		s.jobs.mu.Lock()
		delete(s.jobs.active, j.Collection)
		s.jobs.mu.Unlock()
		if err != nil && ctx.Err() == nil {
			// Not a shutdown: record the failure, so GET /v1/jobs/{id}
			// does not report a job running that is not. Starting a new
			// job picks up what this one left.
			s.log.Error("re-encryption failed", "job_id", j.ID, "collection", j.Collection, "err", err)
			if ferr := s.finishJob(j, JobFailed, err.Error()); ferr != nil {
				s.log.Error("record re-encryption failure", "job_id", j.ID, "err", ferr)
			}
		}
	})
	if !started {
		delete(s.jobs.active, j.Collection)
	}
}

// reencryptUpdate is one value to rewrite: its index entry as read, and
// the entry with the value re-encrypted.
type reencryptUpdate struct {
	key, old, new []byte
	from, to      uint32
}

// reencrypt works through the collection's records in id order, a batch
// at a time. Values are decrypted and encrypted outside the writer; the
// writer only swaps entries that are still exactly as read (a value
// deleted or rewritten meanwhile is left alone), moves the key counters,
// and stores the job's progress, all in one transaction with an audit
// entry.
func (s *Service) reencrypt(ctx context.Context, j *Job) error {
	for {
		if err := ctx.Err(); err != nil {
			return err // shutting down: resumes at the next start
		}
		c, err := s.collection(j.Collection)
		if errors.Is(err, ErrNotFound) {
			return s.finishJob(j, JobFailed, "the collection is gone")
		}
		if err != nil {
			return err
		}
		dek := c.dek()
		b, err := s.readReencryptBatch(j, dek, dek.PrimaryID())
		if err != nil {
			return err
		}
		if b.records == 0 {
			return s.finishJob(j, JobDone, "")
		}
		now := s.now()
		e := s.newEntry(RequestMeta{}, "key.reencrypt")
		e.Collection, e.Target = j.Collection, "job "+j.ID
		next := *j
		size := 1024
		for _, u := range b.updates {
			size += len(u.key) + len(u.new) + 64
		}
		err = s.writer.apply(&mutation{entry: e, size: size, prepare: func(txn storage.Txn) error {
			return s.writeReencryptBatch(txn, c, j, &next, &b, e, now)
		}})
		if errors.Is(err, ErrConflict) {
			continue // the key changed under the batch: read it again
		}
		if errors.Is(err, errLeaseLost) {
			s.log.Warn("re-encryption job taken over by another node; stopping here", "job_id", j.ID)
			return nil
		}
		if err != nil {
			return err
		}
		*j = next
		if s.cfg.ReencryptPause > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(s.cfg.ReencryptPause):
			}
		}
	}
}

// reencryptBatch is one batch of a re-encryption job: the values among
// the records read after the job's cursor to write under the primary key.
type reencryptBatch struct {
	primary uint32
	updates []reencryptUpdate
	last    string // the last record read: the next batch's cursor
	records int
	skipped int // values left as they are (failed their check, or changed meanwhile)
}

// readReencryptBatch reads the next ReencryptBatch records after the
// job's cursor and encrypts again, under primary, each value stored
// under another key, outside the writer.
func (s *Service) readReencryptBatch(j *Job, dek *keys.DataKey, primary uint32) (reencryptBatch, error) {
	b := reencryptBatch{primary: primary}
	prefix := []byte("r/" + j.Collection + "\x00")
	err := s.store.View(func(txn storage.Txn) error {
		it := txn.NewIterator(storage.IterOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 100})
		defer it.Close()
		start := prefix
		if j.Cursor != "" {
			start = append(append([]byte{}, prefix...), j.Cursor+"\x00"...)
		}
		for it.Seek(start); it.Valid() && b.records < s.cfg.ReencryptBatch; it.Next() {
			id := string(it.Item().Key()[len(prefix):])
			var sr storedRecord
			if err := it.Item().Value(func(v []byte) (err error) { sr, err = decodeRecord(v); return err }); err != nil {
				return err
			}
			b.records++
			b.last = id
			for _, f := range sr.Fields {
				if !f.sensitive() {
					continue
				}
				if err := s.reencryptValue(txn, j.Collection, id, f, dek, &b); err != nil {
					return err
				}
			}
		}
		return nil
	})
	return b, err
}

// reencryptValue adds a stored field's value to the batch, encrypted
// again under the batch's primary key, unless it is under that key
// already, gone, or fails its integrity check (logged, counted, left).
func (s *Service) reencryptValue(txn storage.Txn, collection, id string, f storedField, dek *keys.DataKey, b *reencryptBatch) error {
	key := tokenIndexKey(f.Token, collection, id, f.Name)
	item, err := txn.Get(key)
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	old, err := item.ValueCopy(nil)
	if err != nil {
		return err
	}
	ct, _, err := cipherOf(key, old)
	if err != nil {
		return err
	}
	from, ok := keys.KeyID(ct)
	if !ok || from == b.primary {
		return nil
	}
	ad := fieldAD(collection, id, f.Name)
	pt, err := dek.Decrypt(ct, ad)
	if err != nil {
		s.log.Error("re-encryption: stored value failed its integrity check; left as is", "collection", collection, "record_id", id, "field", f.Name)
		b.skipped++
		return nil
	}
	nct, err := dek.Encrypt(pt, ad)
	clear(pt)
	if err != nil {
		return err
	}
	b.updates = append(b.updates, reencryptUpdate{key: key, old: old, new: tokenIndexValue(f.Token, collection, id, f.Name, nct), from: from, to: b.primary})
	return nil
}

// writeReencryptBatch runs in the writer: under the job's lease, it swaps
// each entry still exactly as read for its new one, moves the key
// counters, and records the job's progress in next.
func (s *Service) writeReencryptBatch(txn storage.Txn, c *collection, j, next *Job, b *reencryptBatch, e *AuditEntry, now time.Time) error {
	if err := s.checkLease(txn, next, now); err != nil {
		return err
	}
	if c.isRetired(b.primary) {
		return reject(conflict("key_rotated", "key %d was retired during the batch", b.primary))
	}
	deltas := map[uint32]int64{}
	applied, skipped := 0, b.skipped
	for _, u := range b.updates {
		item, err := txn.Get(u.key)
		if errors.Is(err, storage.ErrNotFound) {
			skipped++
			continue
		}
		if err != nil {
			return err
		}
		same := false
		if err := item.Value(func(v []byte) error { same = bytes.Equal(v, u.old); return nil }); err != nil {
			return err
		}
		if !same {
			skipped++
			continue
		}
		if err := txn.Set(u.key, u.new); err != nil {
			return err
		}
		deltas[u.from]--
		deltas[u.to]++
		applied++
	}
	if err := addKeyCounts(txn, j.Collection, deltas); err != nil {
		return err
	}
	next.Cursor, next.Done, next.Records, next.Skipped = b.last, j.Done+int64(applied), j.Records+int64(b.records), j.Skipped+int64(skipped)
	next.TargetKeyID, next.UpdatedAt = b.primary, now
	e.Reason = fmt.Sprintf("batch: %d values re-encrypted under key %d (%d of %d)", applied, b.primary, next.Done, next.Total)
	return putJob(txn, next)
}

func (s *Service) finishJob(j *Job, status, msg string) error {
	now := s.now()
	next := *j
	next.Status, next.Error, next.FinishedAt, next.UpdatedAt = status, msg, &now, now
	e := s.newEntry(RequestMeta{}, "key.reencrypt")
	e.Collection, e.Target = j.Collection, "job "+j.ID
	e.Reason = fmt.Sprintf("%s: %d values re-encrypted, %d skipped", status, next.Done, next.Skipped)
	if msg != "" {
		e.Reason += ": " + msg
	}
	err := s.writer.apply(&mutation{entry: e, size: 2048, prepare: func(txn storage.Txn) error {
		if err := s.checkLease(txn, &next, now); err != nil {
			return err
		}
		return putJob(txn, &next)
	}})
	if errors.Is(err, errLeaseLost) {
		return nil // another node finishes it
	}
	if err != nil {
		return err
	}
	*j = next
	s.log.Info("re-encryption finished", "job_id", j.ID, "collection", j.Collection, "status", status, "done", j.Done, "skipped", j.Skipped)
	return nil
}
