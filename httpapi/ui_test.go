package httpapi_test

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// TestConsoleServed checks the console's files come from the binary with
// headers that keep other origins out, and that they load nothing from
// elsewhere (the console works offline).
func TestConsoleServed(t *testing.T) {
	t.Parallel()
	a := newAPI(t, 0)
	external := regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?(https?:)?//|@import|url\(\s*["']?(https?:)?//`)
	tests := []struct {
		path, contentType string
		status            int
	}{
		{"/ui/", "text/html", 200},
		{"/ui/app.js", "text/javascript", 200},
		{"/ui/app.css", "text/css", 200},
		{"/ui/missing.js", "", 404},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			ans := a.do("GET", tt.path, "", "")
			if ans.status != tt.status {
				t.Fatalf("status %d, want %d", ans.status, tt.status)
			}
			if tt.status != 200 {
				return
			}
			if ct := ans.header.Get("Content-Type"); !strings.HasPrefix(ct, tt.contentType) {
				t.Errorf("Content-Type %q, want %s", ct, tt.contentType)
			}
			csp := ans.header.Get("Content-Security-Policy")
			for _, want := range []string{"default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"} {
				if !strings.Contains(csp, want) {
					t.Errorf("CSP %q lacks %q", csp, want)
				}
			}
			if ans.header.Get("X-Content-Type-Options") != "nosniff" || ans.header.Get("X-Frame-Options") != "DENY" {
				t.Errorf("headers: %v", ans.header)
			}
			if m := external.FindString(ans.raw); m != "" {
				t.Errorf("loads from another origin: %q", m)
			}
			if strings.Contains(ans.raw, "innerHTML") {
				t.Error("the console must set text, never parse HTML")
			}
		})
	}
	// The bare paths lead to the console.
	for _, p := range []string{"/ui", "/"} {
		req, _ := http.NewRequest("GET", a.url+p, nil)
		resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if loc := resp.Header.Get("Location"); resp.StatusCode/100 != 3 || loc != "/ui/" {
			t.Errorf("GET %s: %d to %q", p, resp.StatusCode, loc)
		}
	}
}
