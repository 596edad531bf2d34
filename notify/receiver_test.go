package notify

import (
	"bytes"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestReceiverRejectsReplays: the same signed delivery is accepted once;
// headers that disagree with the signed body are refused.
func TestReceiverRejectsReplays(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"id":"ev-1","type":"approval.approved","time":"2027-01-15T08:00:00Z","data":{}}`)
	sig := mustSign(t, secret, now, body)
	header := func(kv ...string) http.Header {
		h := http.Header{}
		h.Set(HeaderSignature, sig)
		for i := 0; i < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	r, err := NewReceiver(secret, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		h      http.Header
		body   []byte
		at     time.Time
		replay bool
		ok     bool
	}{
		{"delivery id disagrees", header(HeaderDelivery, "ev-2"), body, now, false, false},
		{"event type disagrees", header(HeaderEvent, "approval.denied"), body, now, false, false},
		{"first delivery", header(HeaderDelivery, "ev-1", HeaderEvent, "approval.approved"), body, now, false, true},
		{"replayed at once", header(), body, now, true, false},
		{"replayed near the end of the window", header(), body, now.Add(4 * time.Minute), true, false},
		{"signed body that is not an event", http.Header{HeaderSignature: {mustSign(t, secret, now, []byte(`{}`))}}, []byte(`{}`), now, false, false},
	}
	for _, tt := range tests {
		ev, err := r.Open(tt.h, tt.body, tt.at)
		if (err == nil) != tt.ok || errors.Is(err, ErrReplay) != tt.replay {
			t.Fatalf("%s: %v, want ok=%v replay=%v", tt.name, err, tt.ok, tt.replay)
		}
		if tt.ok && ev.ID != "ev-1" {
			t.Fatalf("%s: event %+v", tt.name, ev)
		}
	}
	// Verify alone keeps no state, which is why receivers use Open.
	if err := Verify(secret, sig, body, now, 5*time.Minute); err != nil {
		t.Fatal(err)
	}
}

// TestWebhookDoesNotFollowRedirects: a receiver that redirects gets a
// failed delivery, and the redirect's target never sees the body.
func TestWebhookDoesNotFollowRedirects(t *testing.T) {
	t.Parallel()
	for _, status := range []int{http.StatusMovedPermanently, http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		target, got := receiver(t)
		redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target.URL+"/elsewhere", status)
		}))
		t.Cleanup(redirector.Close)
		w, _ := newTestWebhook(t, redirector.URL, 3)
		w.Send("approval.requested", map[string]string{"id": "x"})
		waitFor(t, "failed", func() bool { return count(w, "failed") == 1 })
		if len(got) != 0 || count(w, "ok") != 0 {
			t.Fatalf("%d: the redirect was followed", status)
		}
	}
}

// syncBuffer is a log sink safe for the sender goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestWebhookLogsNoURLSecrets: failed deliveries log the destination's
// scheme and host only, never user-info, path or query.
func TestWebhookLogsNoURLSecrets(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens: every attempt fails to connect
	var logs syncBuffer
	w, err := NewWebhook(WebhookConfig{
		URL:    "http://user:pa55word@" + addr + "/services/T000/B000/pathsecret?token=querysecret",
		Secret: secret, Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Attempts: 2, Backoff: time.Millisecond, MaxBackoff: time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	w.Send("approval.requested", nil)
	waitFor(t, "failed", func() bool { return count(w, "failed") == 1 })
	out := logs.String()
	for _, secret := range []string{"pa55word", "pathsecret", "querysecret", "T000", "user"} {
		if strings.Contains(out, secret) {
			t.Fatalf("log holds %q:\n%s", secret, out)
		}
	}
	if !strings.Contains(out, "http://"+addr) {
		t.Fatalf("log does not name the destination:\n%s", out)
	}
	if _, err := NewWebhook(WebhookConfig{URL: "ftp://x/querysecret", Secret: secret}); err == nil || strings.Contains(err.Error(), "querysecret") {
		t.Fatalf("bad URL error: %v", err)
	}
}
