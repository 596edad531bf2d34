// Package apidoc renders the API's OpenAPI document as the Markdown
// reference in docs/API.md, so a clone of the project carries its own
// API reference and a test keeps it in step with the router (through
// httpapi's openapi.json, which another test holds to the routes).
package apidoc

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
)

type document struct {
	Info struct {
		Title       string `json:"title"`
		Description string `json:"description"`
	} `json:"info"`
	Paths      map[string]map[string]operation `json:"paths"`
	Components struct {
		Schemas map[string]schema `json:"schemas"`
	} `json:"components"`
}

type operation struct {
	Summary     string      `json:"summary"`
	Description string      `json:"description"`
	Parameters  []parameter `json:"parameters"`
	RequestBody *struct {
		Content map[string]struct {
			Schema schema `json:"schema"`
		} `json:"content"`
	} `json:"requestBody"`
	Responses map[string]struct {
		Description string `json:"description"`
		Content     map[string]struct {
			Schema schema `json:"schema"`
		} `json:"content"`
	} `json:"responses"`
	Security []map[string][]string `json:"security"`
}

type parameter struct {
	Name        string `json:"name"`
	In          string `json:"in"`
	Required    bool   `json:"required"`
	Description string `json:"description"`
	Schema      schema `json:"schema"`
}

type schema struct {
	Ref         string            `json:"$ref"`
	Type        string            `json:"type"`
	Format      string            `json:"format"`
	Description string            `json:"description"`
	Enum        []any             `json:"enum"`
	Items       *schema           `json:"items"`
	Properties  map[string]schema `json:"properties"`
	Required    []string          `json:"required"`
}

// Render turns an OpenAPI 3 document into Markdown: every operation, by
// path, with its role, parameters, body and answers, then every schema.
func Render(openapi []byte) ([]byte, error) {
	var doc document
	if err := json.Unmarshal(openapi, &doc); err != nil {
		return nil, fmt.Errorf("openapi: %w", err)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# %s HTTP API reference\n\n", doc.Info.Title)
	b.WriteString("<!-- Generated from httpapi/openapi.json by internal/apidoc; do not edit.\n")
	b.WriteString("     Regenerate: go test ./internal/apidoc -run TestAPIDocIsCurrent -update -->\n\n")
	fmt.Fprintf(&b, "%s\n\n", doc.Info.Description)
	b.WriteString("Every path below is served by `agentvault serve`; `GET /v1/openapi.json` serves the same description as OpenAPI 3.0.\n\n")

	paths := sortedKeys(doc.Paths)
	b.WriteString("## Operations\n\n| method and path | summary |\n|---|---|\n")
	for _, p := range paths {
		for _, m := range methods(doc.Paths[p]) {
			op := doc.Paths[p][m]
			fmt.Fprintf(&b, "| [`%s %s`](#%s) | %s |\n", strings.ToUpper(m), p, anchor(m, p), cell(op.Summary))
		}
	}
	b.WriteString("\n")
	for _, p := range paths {
		for _, m := range methods(doc.Paths[p]) {
			renderOperation(&b, m, p, doc.Paths[p][m])
		}
	}
	b.WriteString("## Schemas\n\n")
	for _, name := range sortedKeys(doc.Components.Schemas) {
		renderSchema(&b, name, doc.Components.Schemas[name])
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}

func renderOperation(b *bytes.Buffer, method, path string, op operation) {
	fmt.Fprintf(b, "<a id=\"%s\"></a>\n### `%s %s`\n\n", anchor(method, path), strings.ToUpper(method), path)
	if op.Summary != "" {
		fmt.Fprintf(b, "%s.\n\n", strings.TrimSuffix(op.Summary, "."))
	}
	if op.Description != "" {
		fmt.Fprintf(b, "%s\n\n", op.Description)
	}
	if len(op.Security) == 0 {
		b.WriteString("No authentication.\n\n")
	} else {
		b.WriteString("Authentication: `Authorization: Bearer <api token>`.\n\n")
	}
	if len(op.Parameters) > 0 {
		b.WriteString("| parameter | in | type | required | meaning |\n|---|---|---|---|---|\n")
		for _, p := range op.Parameters {
			fmt.Fprintf(b, "| `%s` | %s | %s | %s | %s |\n", p.Name, p.In, typeOf(p.Schema), yesNo(p.Required), cell(p.Description))
		}
		b.WriteString("\n")
	}
	if op.RequestBody != nil {
		for _, ct := range sortedKeys(op.RequestBody.Content) {
			fmt.Fprintf(b, "Body (`%s`): %s\n\n", ct, typeOf(op.RequestBody.Content[ct].Schema))
		}
	}
	b.WriteString("| status | meaning | body |\n|---|---|---|\n")
	for _, code := range sortedKeys(op.Responses) {
		r := op.Responses[code]
		body := ""
		for _, ct := range sortedKeys(r.Content) {
			body = typeOf(r.Content[ct].Schema)
			if ct != "application/json" {
				body += " (`" + ct + "`)"
			}
		}
		fmt.Fprintf(b, "| %s | %s | %s |\n", code, cell(r.Description), body)
	}
	b.WriteString("\n")
}

func renderSchema(b *bytes.Buffer, name string, s schema) {
	fmt.Fprintf(b, "<a id=\"schema-%s\"></a>\n### %s\n\n", strings.ToLower(name), name)
	if s.Description != "" {
		fmt.Fprintf(b, "%s\n\n", s.Description)
	}
	if len(s.Properties) == 0 {
		fmt.Fprintf(b, "%s\n\n", typeOf(s))
		return
	}
	b.WriteString("| field | type | meaning |\n|---|---|---|\n")
	for _, p := range sortedKeys(s.Properties) {
		prop := s.Properties[p]
		req := ""
		if slices.Contains(s.Required, p) {
			req = " (required)"
		}
		fmt.Fprintf(b, "| `%s`%s | %s | %s |\n", p, req, typeOf(prop), cell(describe(prop)))
	}
	b.WriteString("\n")
}

func describe(s schema) string {
	d := s.Description
	if len(s.Enum) > 0 {
		var vals []string
		for _, v := range s.Enum {
			vals = append(vals, fmt.Sprintf("`%v`", v))
		}
		if d != "" {
			d += "; "
		}
		d += "one of " + strings.Join(vals, ", ")
	}
	return d
}

// typeOf names a schema briefly: a link for a reference, the item type
// for an array, the type (and format) otherwise.
func typeOf(s schema) string {
	switch {
	case s.Ref != "":
		name := s.Ref[strings.LastIndexByte(s.Ref, '/')+1:]
		return fmt.Sprintf("[%s](#schema-%s)", name, strings.ToLower(name))
	case s.Type == "array" && s.Items != nil:
		return "array of " + typeOf(*s.Items)
	case s.Type == "object" && len(s.Properties) > 0:
		var fields []string
		for _, p := range sortedKeys(s.Properties) {
			fields = append(fields, "`"+p+"`: "+typeOf(s.Properties[p]))
		}
		return "object {" + strings.Join(fields, ", ") + "}"
	case s.Format != "":
		return s.Type + " (" + s.Format + ")"
	case s.Type == "":
		return "any"
	}
	return s.Type
}

var methodOrder = []string{"get", "post", "put", "patch", "delete"}

func methods(ops map[string]operation) []string {
	var out []string
	for _, m := range methodOrder {
		if _, ok := ops[m]; ok {
			out = append(out, m)
		}
	}
	return out
}

func anchor(method, path string) string {
	r := strings.NewReplacer("/", "-", "{", "", "}", "", ".", "-")
	return strings.ToLower(method) + strings.TrimRight(r.Replace(path), "-")
}

func cell(s string) string { return strings.ReplaceAll(strings.ReplaceAll(s, "|", "\\|"), "\n", " ") }

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
