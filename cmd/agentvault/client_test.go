package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// TestCLIProtectsTheToken: the CLI refuses to send an operator token over
// plain http beyond loopback (unless told the network is trusted), and
// never follows a redirect with it.
func TestCLIProtectsTheToken(t *testing.T) {
	t.Parallel()
	var leaked atomic.Int32
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			leaked.Add(1)
		}
	}))
	t.Cleanup(elsewhere.Close)
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	t.Cleanup(redirector.Close)

	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"plain http to another host", []string{"--server", "http://vault.example.com:8080"}, "refusing to send the API token over plain http"},
		{"not a URL", []string{"--server", "vault.example.com"}, "want an http(s) URL"},
		{"redirect to another port", []string{"--server", redirector.URL}, "not followed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"status", "--token", "avt_operator-token-for-the-test"}, tt.args...)
			err := keysCmd(args, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "operator-token") {
				t.Fatalf("the error shows the token: %v", err)
			}
		})
	}
	if n := leaked.Load(); n != 0 {
		t.Fatalf("the token reached the redirect's target %d times", n)
	}
	// Loopback is fine as it is; elsewhere only when the operator says so.
	for _, tc := range []struct {
		server   string
		insecure bool
		ok       bool
	}{
		{"http://127.0.0.1:8080", false, true},
		{"http://[::1]:8080", false, true},
		{"http://localhost:8080", false, true},
		{"https://vault.example.com", false, true},
		{"http://vault.example.com", true, true},
		{"http://127.0.0.1.example.com", false, false},
	} {
		c := &client{server: tc.server, insecureHTTP: tc.insecure, http: &http.Client{}}
		if err := c.setupTLS(); (err == nil) != tc.ok {
			t.Errorf("%s (insecure-http %v): %v, want ok=%v", tc.server, tc.insecure, err, tc.ok)
		}
	}
}

// TestRedactURL: the webhook URL serve logs keeps scheme and host only;
// Slack-style URLs keep their secret in the path.
func TestRedactURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"https://hooks.slack.com/services/T000/B000/XXXXsecret": "https://hooks.slack.com",
		"https://user:pa55@example.com:8443/hook?token=abc":     "https://example.com:8443",
		"http://127.0.0.1:9000":                                 "http://127.0.0.1:9000",
	} {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRestoresText(t *testing.T) {
	for _, tc := range []struct {
		args []string
		text bool
	}{
		{[]string{"--purpose", "support"}, true},
		{[]string{"-purpose=support", "--approval-id", "x"}, true},
		{[]string{"--data-dir", "d", "backup.file"}, false},
		{[]string{"--to-postgres", "postgres://h/db", "f"}, false},
		{[]string{"--kms", "vault", "--data-dir=d", "f"}, false},
		{[]string{"f"}, false},
	} {
		if got := restoresText(tc.args); got != tc.text {
			t.Errorf("restoresText(%q) = %v, want %v", tc.args, got, tc.text)
		}
	}
}
