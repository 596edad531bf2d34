// Package httpapi is agentvault's HTTP API: routing (gorilla/mux),
// authentication by bearer token, role checks, JSON decoding with limits,
// and the mapping of domain errors to the contract's error shape
// {"error":{"code","message"}}. It holds no business logic and never
// touches storage or keys: it calls package vault.
package httpapi
