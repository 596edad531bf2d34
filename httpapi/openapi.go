package httpapi

import (
	_ "embed"
	"net/http"
)

// openAPI describes every route of the API (OpenAPI 3.0). A test walks
// the router and fails if a route and the document disagree.
//
//go:embed openapi.json
var openAPI []byte

func (s *Server) openAPIDoc(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	w.Write(openAPI)
}

// OpenAPI returns the OpenAPI document the server serves, for tools that
// render it (docs/API.md).
func OpenAPI() []byte { return append([]byte(nil), openAPI...) }
