// Package tokenizer makes and recognises tokens and masks. It stores
// nothing: uniqueness of format-preserving tokens is the caller's to
// enforce (it calls again on a collision), and deterministic tokens take
// their key from the caller.
//
// Token kinds:
//   - random: "tok_" followed by 26 base32 characters (128 random bits).
//   - deterministic: "dtk_" followed by 26 base32 characters, the first 128
//     bits of a keyed PRF (HMAC-SHA256, per collection) over the field name
//     and the value, so equal values in one field share a token and nobody
//     without the key can compute one.
//   - format_preserving: random, but in the shape of the value (see Format).
package tokenizer
