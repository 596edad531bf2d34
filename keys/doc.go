// Package keys owns agentvault's key hierarchy.
//
// A key-encryption key (KEK) lives outside the process: in HashiCorp Vault
// Transit (VaultKEK, through Tink's HashiCorp Vault KMS extension) or, for
// development only, in a cleartext Tink keyset file in the data directory
// (LocalKEK). Below it, every collection has its own Tink keysets: a data
// keyset (AES-256-GCM) that encrypts field values, and an index keyset
// (HMAC-SHA256 PRF) that derives deterministic tokens. Those keysets exist
// at rest only wrapped by the KEK, with associated data naming what they
// belong to, so a wrapped keyset copied to another collection does not open.
//
// The package knows nothing about records: callers hand it wrapped bytes
// and get usable keys back, and store what it returns.
package keys
