package httpapi

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
)

// TestOpenAPIMatchesRoutes walks the router: every route with its methods
// is in the OpenAPI document, and the document names no route that does
// not exist.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openAPI, &doc); err != nil || !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi.json: %v (version %q)", err, doc.OpenAPI)
	}
	srv := New(Config{Registry: prometheus.NewRegistry()})
	routed := map[string]bool{}
	err := srv.router.Walk(func(route *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		path, err := route.GetPathTemplate()
		if err != nil {
			return nil
		}
		methods, _ := route.GetMethods()
		for _, m := range methods {
			if m == http.MethodHead {
				continue
			}
			if path == "/" || path == "/ui" {
				continue // redirects to /ui/
			}
			key := strings.ToLower(m) + " " + path
			routed[key] = true
			if _, ok := doc.Paths[path][strings.ToLower(m)]; !ok {
				t.Errorf("route %s %s is not in openapi.json", m, path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var documented []string
	for path, ops := range doc.Paths {
		for m := range ops {
			documented = append(documented, m+" "+path)
		}
	}
	slices.Sort(documented)
	for _, d := range documented {
		if !routed[d] {
			t.Errorf("openapi.json documents %s, which has no route", d)
		}
	}
	if len(routed) < 30 {
		t.Fatalf("walked only %d routes", len(routed))
	}
}
