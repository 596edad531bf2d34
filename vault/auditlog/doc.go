// Package auditlog is agentvault's tamper-evident audit log format: the
// entries, how they chain, the signed checkpoints over the chain's head,
// and the verification an auditor can run without trusting the server.
//
// What it guarantees: each entry's hash is the SHA-256 of its canonical
// JSON, which includes the previous entry's hash, so changing, deleting,
// inserting or reordering an entry breaks the chain at that entry, and a
// stored byte that differs from the canonical encoding is caught too. A
// checkpoint is an Ed25519 signature (Tink) over (seq, hash, time) of the
// head; someone who can rewrite the database can rebuild a consistent
// chain but not sign it. What it does not guarantee by itself: that the
// newest entries are still there. Checkpoints stored beside the log can
// be deleted with the entries they cover; only checkpoints held outside
// the database (witnesses) catch that cut, up to the newest witness.
//
// What it never holds: a sensitive value, or a raw token (tokens appear
// as keyed hashes). Storage is the caller's: package vault stores entries
// in Badger, in order, through its single writer.
package auditlog
