package vault

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/agentvault/agentvault/storage"
)

// State shared by nodes. Several servers may share one store (PostgreSQL),
// and each keeps principals, grants and collections' keysets in memory.
// Every change to them also writes a new generation (genKey) in the same
// transaction. The writer reads the generation at the start of each batch,
// in the batch's own transaction (which no other node's can interleave
// with), and when it moved, reloads what changed before it runs the
// batch: so every audited write is decided with the state as the store
// has it, whatever node changed it. A revoked principal's request fails
// there; a request encrypted under a data key another node has retired
// since is refused (key_rotated, retry), as on one node. Grants are checked
// again in the transaction anyway (a last use, a revocation). Requests that
// write nothing (a schema read) use the memory as it is, which a poll of
// the generation brings up to date within a second.

var genKey = []byte("meta/gen")

// bumpGen marks a change to shared state in txn.
func bumpGen(txn storage.Txn) error { return txn.Set(genKey, []byte(uuid.NewString())) }

// syncShared brings the in-memory state up to date with txn's view of the
// store if its generation moved since the last look.
func (s *Service) syncShared(txn storage.Txn) error {
	var gen []byte
	switch item, err := txn.Get(genKey); {
	case errors.Is(err, storage.ErrNotFound):
	case err != nil:
		return err
	default:
		if gen, err = item.ValueCopy(nil); err != nil {
			return err
		}
	}
	s.genMu.Lock()
	defer s.genMu.Unlock()
	if s.genSeen && bytes.Equal(gen, s.gen) {
		return nil
	}
	if err := s.reloadShared(txn); err != nil {
		return fmt.Errorf("reload shared state: %w", err)
	}
	s.gen, s.genSeen = gen, true
	return nil
}

// pollShared is syncShared in a read transaction of its own, for a node
// that is not writing.
func (s *Service) pollShared() error {
	return s.store.View(s.syncShared)
}

// reloadShared reads principals and grants again, and the data keysets of
// the collections in memory whose stored keyset changed.
func (s *Service) reloadShared(txn storage.Txn) error {
	byID, byHash, err := readPrincipals(txn, s.log)
	if err != nil {
		return err
	}
	grants, err := readGrants(txn)
	if err != nil {
		return err
	}
	s.pmu.Lock()
	s.byID, s.byHash = byID, byHash
	s.pmu.Unlock()
	s.gmu.Lock()
	s.grants, s.byAgent = map[string]*Grant{}, map[string][]*Grant{}
	for _, g := range grants {
		s.cacheGrant(g)
	}
	s.gmu.Unlock()
	s.cmu.RLock()
	loaded := make([]*collection, 0, len(s.collections))
	for _, c := range s.collections {
		loaded = append(loaded, c)
	}
	s.cmu.RUnlock()
	for _, c := range loaded {
		wrapped, err := getValue(txn, dekKey(c.Name))
		if err != nil {
			return err
		}
		if bytes.Equal(wrapped, c.wrappedDEK()) {
			continue
		}
		dek, err := s.keys.OpenDataKey(wrapped, dekScope(c.Name))
		if err != nil {
			return kmsErr(err)
		}
		c.setDEK(dek, wrapped)
	}
	return nil
}

// checkActor refuses a mutation whose actor was revoked (on any node).
func (s *Service) checkActor(e *AuditEntry) error {
	if e == nil || e.Actor == "" || e.Actor == "system" {
		return nil
	}
	s.pmu.RLock()
	p, ok := s.byID[e.Actor]
	s.pmu.RUnlock()
	if ok && !p.Active() {
		return ErrUnauthenticated
	}
	return nil
}
