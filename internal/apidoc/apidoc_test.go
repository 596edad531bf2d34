package apidoc

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentvault/agentvault/httpapi"
)

var update = flag.Bool("update", false, "rewrite docs/API.md from httpapi/openapi.json")

// TestAPIDocIsCurrent: docs/API.md is exactly what the OpenAPI document
// renders to, so the reference a user of a clone reads names every route
// the router serves (TestOpenAPIMatchesRoutes holds the document to the
// router).
func TestAPIDocIsCurrent(t *testing.T) {
	want, err := Render(httpapi.OpenAPI())
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, '\n')
	path := filepath.Join("..", "..", "docs", "API.md")
	if *update {
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (generate it: go test ./internal/apidoc -run TestAPIDocIsCurrent -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("docs/API.md is out of date with httpapi/openapi.json: go test ./internal/apidoc -run TestAPIDocIsCurrent -update")
	}
	for _, route := range []string{"`POST /v1/detokenize`", "`GET /v1/audit/verify`", "`GET /v1/backup`", "`GET /v1/audit/checkpoint`"} {
		if !strings.Contains(string(got), route) {
			t.Errorf("docs/API.md does not document %s", route)
		}
	}
}

func TestRender(t *testing.T) {
	doc := `{"info":{"title":"t","description":"d"},"paths":{"/v1/x/{id}":{"get":{"summary":"Get x","description":"Role: any.",
	 "parameters":[{"name":"id","in":"path","required":true,"schema":{"type":"string"}}],
	 "responses":{"200":{"description":"ok","content":{"application/json":{"schema":{"$ref":"#/components/schemas/X"}}}}},"security":[{"bearer":[]}]}}},
	 "components":{"schemas":{"X":{"type":"object","required":["a"],"properties":{"a":{"type":"string","enum":["p","q"]},"b":{"type":"array","items":{"type":"integer"}}}}}}}`
	out, err := Render([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"### `GET /v1/x/{id}`", "| `id` | path | string | yes |", "| 200 | ok | [X](#schema-x) |",
		"| `a` (required) | string | one of `p`, `q` |", "| `b` | array of integer |", "Role: any.",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("rendered doc lacks %q:\n%s", want, out)
		}
	}
	if _, err := Render([]byte("{")); err == nil {
		t.Error("rendered a broken document")
	}
}
