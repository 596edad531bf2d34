package auditlog

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/tink-crypto/tink-go/v2/tink"
)

// Checkpoint is a signed statement of the audit chain's head: entry Seq
// has hash Hash. Entries up to a checkpoint cannot be changed without the
// signature failing to match, even by someone who can rewrite the
// database. Checkpoints are stored beside the log, where that same person
// could delete the newest together with the entries they cover; so each
// is also shipped out as it is made (a log line, and the webhook's
// audit.checkpoint event), and a verifier holds the log to checkpoints
// saved outside (witnesses): a log that no longer holds a witnessed entry
// with the same hash was cut or rewritten.
type Checkpoint struct {
	Seq       uint64    `json:"seq"`
	Hash      string    `json:"hash"`
	Time      time.Time `json:"time"`
	Signature []byte    `json:"signature"`
}

const checkpointMsgV = "agentvault-audit-checkpoint/v1"

// SignedMessage is what a checkpoint's signature covers.
func (c *Checkpoint) SignedMessage() []byte {
	return []byte(checkpointMsgV + "\n" + strconv.FormatUint(c.Seq, 10) + "\n" + c.Hash + "\n" + c.Time.UTC().Format(time.RFC3339Nano))
}

// checkCheckpoints checks each checkpoint's signature and that the chain
// (hashes by seq, as verified) holds the entry it signed: first those
// stored beside the log, then the witnesses saved outside it. A checkpoint
// past the end of the log means the tail was cut off. It then says how
// far the head is past the newest checkpoint of either kind: the entries
// no signature covers yet.
func checkCheckpoints(res *VerifyResult, hashes []string, cps, witnesses []Checkpoint, verifier tink.Verifier) {
	check := func(cp Checkpoint, what string) bool {
		fail := func(first uint64, format string, args ...any) bool {
			*res = VerifyResult{OK: false, Entries: res.Entries, FirstBadSeq: first, Reason: fmt.Sprintf(format, args...)}
			return false
		}
		if verifier != nil {
			if err := verifier.Verify(cp.Signature, cp.SignedMessage()); err != nil {
				return fail(cp.Seq, "%s at entry %d has a bad signature", what, cp.Seq)
			}
		}
		if cp.Seq == 0 || cp.Seq > uint64(len(hashes)) {
			return fail(uint64(len(hashes))+1, "the log ends at entry %d but %s covers entry %d: the tail was cut off", len(hashes), what, cp.Seq)
		}
		if hashes[cp.Seq-1] != cp.Hash {
			return fail(cp.Seq, "entry %d differs from the one %s signed", cp.Seq, what)
		}
		res.LastCheckpoint = max(res.LastCheckpoint, cp.Seq)
		return true
	}
	for _, cp := range cps {
		if !check(cp, "a signed checkpoint") {
			return
		}
		res.Checkpoints++
	}
	for _, cp := range witnesses {
		if !check(cp, "a checkpoint saved outside the database") {
			return
		}
		res.Witnessed++
	}
	res.UnsignedEntries = res.Entries - res.LastCheckpoint
}

// ParseCheckpoints reads checkpoints saved outside the database: one per
// line (or one JSON document), each a checkpoint object, an export line
// ({"checkpoint": {...}}), a webhook event ({"type": "audit.checkpoint",
// "data": {...}}) or a JSON log line of the server's ("checkpoint": "<the
// checkpoint as JSON>"). Other lines are skipped; none found is an error.
func ParseCheckpoints(r io.Reader) ([]Checkpoint, error) {
	var out []Checkpoint
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if cp, ok := parseCheckpointLine(sc.Bytes()); ok {
			out = append(out, cp)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errors.New("no checkpoint found (want lines holding a checkpoint: seq, hash, time, signature)")
	}
	return out, nil
}

func parseCheckpointLine(line []byte) (Checkpoint, bool) {
	var probe struct {
		Wrapped json.RawMessage `json:"checkpoint"`
		Type    string          `json:"type"`
		Data    json.RawMessage `json:"data"`
	}
	if json.Unmarshal(line, &probe) != nil {
		return Checkpoint{}, false
	}
	doc := line
	switch {
	case probe.Type != "":
		if probe.Type != "audit.checkpoint" {
			return Checkpoint{}, false
		}
		doc = probe.Data
	case len(probe.Wrapped) > 0 && probe.Wrapped[0] == '"':
		var s string
		if json.Unmarshal(probe.Wrapped, &s) != nil {
			return Checkpoint{}, false
		}
		doc = []byte(s)
	case len(probe.Wrapped) > 0:
		doc = probe.Wrapped
	}
	var cp Checkpoint
	if json.Unmarshal(doc, &cp) != nil {
		return Checkpoint{}, false
	}
	return cp, cp.Seq > 0 && cp.Hash != "" && len(cp.Signature) > 0
}
