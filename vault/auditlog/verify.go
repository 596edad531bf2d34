package auditlog

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/tink-crypto/tink-go/v2/tink"

	"github.com/agentvault/agentvault/keys"
)

// VerifyResult is the outcome of recomputing the audit chain.
type VerifyResult struct {
	OK          bool   `json:"ok"`
	Entries     uint64 `json:"entries"`
	Head        string `json:"head,omitempty"`
	Checkpoints int    `json:"checkpoints"`
	// Witnessed counts the checkpoints saved outside the database that the
	// log was held to (all must match).
	Witnessed int `json:"witnessed,omitempty"`
	// LastCheckpoint is the newest entry a valid checkpoint covers;
	// UnsignedEntries how far the head is past it: the entries someone
	// able to rewrite the database could still cut off unnoticed, unless
	// a newer checkpoint was saved outside.
	LastCheckpoint  uint64 `json:"last_checkpoint"`
	UnsignedEntries uint64 `json:"unsigned_entries"`
	FirstBadSeq     uint64 `json:"first_bad_seq,omitempty"`
	Reason          string `json:"reason,omitempty"`
}

// Chain recomputes the chain entry by entry, in order.
type Chain struct {
	res    VerifyResult
	prev   string
	hashes []string
}

// NewChain starts checking a log from its first entry.
func NewChain() *Chain {
	return &Chain{res: VerifyResult{OK: true, Head: GenesisHash}, prev: GenesisHash}
}

// Add checks the next entry; storedAt is the sequence number its storage
// key says. It returns false, with the result filled in, at the first bad
// entry.
func (c *Chain) Add(storedAt uint64, raw []byte) bool {
	want := uint64(len(c.hashes)) + 1
	bad := func(format string, args ...any) bool {
		c.res = VerifyResult{OK: false, Entries: c.res.Entries, FirstBadSeq: want, Reason: fmt.Sprintf(format, args...)}
		return false
	}
	var e Entry
	if err := json.Unmarshal(raw, &e); err != nil {
		return bad("entry %d does not decode", storedAt)
	}
	switch {
	case storedAt != want:
		return bad("expected entry %d, found %d: entries missing or reordered", want, storedAt)
	case e.Seq != storedAt:
		return bad("entry stored at %d says it is %d: entries moved", storedAt, e.Seq)
	case e.PrevHash != c.prev:
		return bad("entry %d does not link to the entry before it", storedAt)
	case e.Hash != Hash(&e):
		return bad("entry %d was altered: its hash does not match its content", storedAt)
	}
	if sealed := Seal(&e); !bytes.Equal(sealed, raw) {
		return bad("entry %d was altered: its stored bytes differ from its content", storedAt)
	}
	c.prev = e.Hash
	c.hashes = append(c.hashes, e.Hash)
	c.res.Entries++
	c.res.Head = e.Hash
	return true
}

// Fail records that the next entry is bad for a reason the caller found
// (a malformed storage key, say).
func (c *Chain) Fail(reason string) {
	c.res = VerifyResult{OK: false, Entries: c.res.Entries, FirstBadSeq: uint64(len(c.hashes)) + 1, Reason: reason}
}

// Finish checks the stored checkpoints and the witnesses against the
// verified chain.
func (c *Chain) Finish(cps, witnesses []Checkpoint, publicKeyset []byte) (VerifyResult, error) {
	if !c.res.OK {
		return c.res, nil
	}
	var verifier tink.Verifier
	if publicKeyset != nil {
		v, err := keys.NewVerifier(publicKeyset)
		if err != nil {
			return VerifyResult{}, err
		}
		verifier = v
	} else if len(cps) > 0 || len(witnesses) > 0 {
		return VerifyResult{}, errors.New("checkpoints present but no public key to check them")
	}
	checkCheckpoints(&c.res, c.hashes, cps, witnesses, verifier)
	return c.res, nil
}

// ExportLine is one line of an exported log: an entry, or a checkpoint.
type ExportLine struct {
	*Entry
	Checkpoint *Checkpoint `json:"checkpoint,omitempty"`
}

// VerifyExport checks an exported log (JSON lines from `agentvault audit
// export`) with the checkpoint public key: someone who does not trust the
// server can run it on a copy. Entries must come in order; checkpoint
// lines may come anywhere.
func VerifyExport(r io.Reader, publicKeyset []byte, witnesses ...Checkpoint) (VerifyResult, error) {
	if publicKeyset == nil {
		return VerifyResult{}, errors.New("verifying an export needs the checkpoint public key")
	}
	c := NewChain()
	var cps []Checkpoint
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var probe struct {
			Seq        *uint64     `json:"seq"`
			Checkpoint *Checkpoint `json:"checkpoint"`
		}
		if err := json.Unmarshal(line, &probe); err != nil {
			c.res = VerifyResult{OK: false, Entries: c.res.Entries, FirstBadSeq: uint64(len(c.hashes)) + 1, Reason: "a line does not decode"}
			return c.res, nil
		}
		if probe.Checkpoint != nil {
			cps = append(cps, *probe.Checkpoint)
			continue
		}
		seq := uint64(0)
		if probe.Seq != nil {
			seq = *probe.Seq
		}
		if !c.Add(seq, bytes.Clone(line)) {
			return c.res, nil
		}
	}
	if err := sc.Err(); err != nil {
		return VerifyResult{}, err
	}
	sort.Slice(cps, func(i, j int) bool { return cps[i].Seq < cps[j].Seq })
	return c.Finish(cps, witnesses, publicKeyset)
}
