package notify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

type received struct {
	header http.Header
	body   []byte
}

// receiver answers with the statuses in order (then 200) and records what
// it got.
func receiver(t *testing.T, statuses ...int) (*httptest.Server, chan received) {
	got := make(chan received, 100)
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- received{r.Header.Clone(), b}
		if i := int(n.Add(1)) - 1; i < len(statuses) {
			w.WriteHeader(statuses[i])
		}
	}))
	t.Cleanup(srv.Close)
	return srv, got
}

func newTestWebhook(t *testing.T, url string, attempts int) (*Webhook, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	w, err := NewWebhook(WebhookConfig{URL: url, Secret: secret, Registry: reg, Attempts: attempts, Backoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	return w, reg
}

func count(w *Webhook, result string) float64 {
	var m dto.Metric
	if err := w.deliveries.WithLabelValues(result).Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// waitFor polls a condition the sender reaches asynchronously.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWebhookDeliversSignedEvents(t *testing.T) {
	t.Parallel()
	srv, got := receiver(t)
	w, _ := newTestWebhook(t, srv.URL, 3)
	w.Send("approval.requested", map[string]any{"id": "a-1", "purpose": "payroll"})
	r := <-got
	if err := Verify(secret, r.header.Get(HeaderSignature), r.body, time.Now(), time.Minute); err != nil {
		t.Fatalf("receiver cannot verify the signature: %v", err)
	}
	var ev Event
	if err := json.Unmarshal(r.body, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Type != "approval.requested" || ev.ID == "" || r.header.Get(HeaderDelivery) != ev.ID || r.header.Get(HeaderEvent) != ev.Type || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("event %+v, headers %v", ev, r.header)
	}
	if data := ev.Data.(map[string]any); data["id"] != "a-1" {
		t.Fatalf("data: %v", ev.Data)
	}
	waitFor(t, "ok counted", func() bool { return count(w, "ok") == 1 })
}

func TestWebhookRetries(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		statuses []int
		attempts int
		posts    int
		result   string
	}{
		{"5xx then success", []int{500, 503}, 5, 3, "ok"},
		{"429 and 408 are retried", []int{429, 408}, 5, 3, "ok"},
		{"gives up after the attempts", []int{500, 500, 500, 500}, 3, 3, "failed"},
		{"4xx is not retried", []int{400}, 5, 1, "failed"},
		{"gone is not retried", []int{410}, 5, 1, "failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, got := receiver(t, tt.statuses...)
			w, _ := newTestWebhook(t, srv.URL, tt.attempts)
			w.Send("approval.requested", map[string]string{"id": "x"})
			waitFor(t, tt.result, func() bool { return count(w, tt.result) == 1 })
			if len(got) != tt.posts {
				t.Fatalf("%d POSTs, want %d", len(got), tt.posts)
			}
			if r := count(w, "retry"); int(r) != tt.posts-1 {
				t.Fatalf("%v retries, want %d", r, tt.posts-1)
			}
			// Every attempt carries the same delivery id: receivers dedupe on it.
			var ids []string
			for range tt.posts {
				ids = append(ids, (<-got).header.Get(HeaderDelivery))
			}
			for _, id := range ids {
				if id != ids[0] {
					t.Fatalf("delivery ids differ across retries: %v", ids)
				}
			}
		})
	}
}

// TestWebhookNeverBlocks sends into a receiver that hangs: Send returns
// every time, a full queue drops events, and Close does not wait for the
// receiver.
func TestWebhookNeverBlocks(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	t.Cleanup(func() { once.Do(func() { close(release) }); srv.Close() })
	reg := prometheus.NewRegistry()
	w, err := NewWebhook(WebhookConfig{URL: srv.URL, Secret: secret, Registry: reg, QueueSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		w.Send("approval.requested", nil)
	}
	if d := count(w, "dropped"); d < 7 {
		t.Fatalf("%v dropped with a queue of 2 and a hung receiver, want at least 7", d)
	}
	w.Close() // cancels the hung POST
	if ok := count(w, "ok"); ok != 0 {
		t.Fatalf("%v delivered to a receiver that never answered", ok)
	}
}

func TestVerify(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"id":"e"}`)
	good := mustSign(t, secret, now, body)
	tests := []struct {
		name   string
		secret []byte
		header string
		body   []byte
		now    time.Time
		ok     bool
	}{
		{"valid", secret, good, body, now, true},
		{"within tolerance", secret, good, body, now.Add(4 * time.Minute), true},
		{"changed body", secret, good, []byte(`{"id":"f"}`), now, false},
		{"wrong secret", []byte("another secret, 32 bytes long!!!"), good, body, now, false},
		{"replayed later", secret, good, body, now.Add(6 * time.Minute), false},
		{"from the future", secret, good, body, now.Add(-6 * time.Minute), false},
		{"no timestamp", secret, good[len("t=1800000000,"):], body, now, false},
		{"no mac", secret, "t=1800000000", body, now, false},
		{"not hex", secret, "t=1800000000,v1=zz", body, now, false},
		{"empty", secret, "", body, now, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Verify(tt.secret, tt.header, tt.body, tt.now, 5*time.Minute)
			if (err == nil) != tt.ok {
				t.Fatalf("Verify = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestNewWebhookValidates(t *testing.T) {
	t.Parallel()
	tests := []struct {
		url    string
		secret []byte
	}{
		{"ftp://example.com/hook", secret},
		{"/relative", secret},
		{"http://", secret},
		{"https://example.com/hook", []byte("short")},
	}
	for _, tt := range tests {
		if w, err := NewWebhook(WebhookConfig{URL: tt.url, Secret: tt.secret}); err == nil {
			w.Close()
			t.Errorf("NewWebhook(%q, %d-byte secret) accepted", tt.url, len(tt.secret))
		}
	}
}

func FuzzVerify(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	f.Add(mustSign(f, secret, now, []byte("x")), []byte("x"))
	f.Add("t=,v1=", []byte{})
	f.Add("v1=00,t=1800000000", []byte("y"))
	f.Fuzz(func(t *testing.T, header string, body []byte) {
		if Verify(secret, header, body, now, time.Minute) == nil && !carriesGenuineMAC(header, body, now) {
			t.Fatalf("accepted a header without a genuine MAC of the body: %q", header)
		}
	})
}

// carriesGenuineMAC reports whether header holds the MAC of body for some
// second within a minute of now: the only headers Verify may accept.
func carriesGenuineMAC(header string, body []byte, now time.Time) bool {
	for d := -time.Minute; d <= time.Minute; d += time.Second {
		sig, _ := Sign(secret, now.Add(d), body)
		if strings.Contains(strings.ToLower(header), sig[strings.Index(sig, "v1="):]) {
			return true
		}
	}
	return false
}

func mustSign(t testing.TB, secret []byte, at time.Time, body []byte) string {
	t.Helper()
	s, err := Sign(secret, at, body)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestSignatureIsPlainHMAC checks that the Tink-made tag is exactly
// HMAC-SHA256(secret, t + "." + body), what a receiver computes with its
// own library.
func TestSignatureIsPlainHMAC(t *testing.T) {
	t.Parallel()
	at := time.Unix(1_800_000_000, 0)
	body := []byte(`{"id":"e","type":"approval.requested"}`)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("1800000000." + string(body)))
	want := "t=1800000000,v1=" + hex.EncodeToString(m.Sum(nil))
	if got := mustSign(t, secret, at, body); got != want {
		t.Fatalf("signature %s, want %s", got, want)
	}
}
