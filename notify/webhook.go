// Package notify tells people outside agentvault that something needs
// them: today, a webhook for each new approval request.
//
// Delivery is at most once per process lifetime and best effort: events
// wait in a bounded in-memory queue, each is retried with exponential
// backoff and jitter, and a queue that is full drops the event (counted
// and logged) rather than slowing the request that raised it. Approvers
// who miss a notification still find the request in the console and in
// GET /v1/approvals.
package notify

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/tink-crypto/tink-go/v2/insecuresecretdataaccess"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/mac"
	tinkhmac "github.com/tink-crypto/tink-go/v2/mac/hmac"
	"github.com/tink-crypto/tink-go/v2/secretdata"
	"github.com/tink-crypto/tink-go/v2/tink"
)

// Headers on every delivery.
const (
	// HeaderSignature is "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t + "." + body)>",
	// computed with Tink's HMAC (no key-id prefix).
	HeaderSignature = "X-Agentvault-Signature"
	// HeaderEvent and HeaderDelivery repeat the body's type and id for
	// routing. They are not signed: a receiver relies on the body's
	// fields, which are (Receiver checks that the headers agree).
	HeaderEvent    = "X-Agentvault-Event"
	HeaderDelivery = "X-Agentvault-Delivery"
)

// Event is one webhook body, every field of it signed. ID is the same on
// every retry of one event: receivers deduplicate on it. Data never holds
// a value or a token.
type Event struct {
	ID   string    `json:"id"`
	Type string    `json:"type"`
	Time time.Time `json:"time"`
	Data any       `json:"data"`
}

// WebhookConfig configures a Webhook.
type WebhookConfig struct {
	URL    string
	Secret []byte // HMAC-SHA256 key shared with the receiver; at least 16 bytes
	Logger *slog.Logger
	// Registry receives delivery metrics; nil skips them.
	Registry prometheus.Registerer
	// Client sends the POSTs; nil means a client with a 10s timeout.
	Client *http.Client
	// Attempts per event (default 8); Backoff the first retry's delay,
	// doubled each time up to MaxBackoff (defaults 1s and 5m).
	Attempts   int
	Backoff    time.Duration
	MaxBackoff time.Duration
	// QueueSize bounds waiting events (default 1024).
	QueueSize int
	// Now is the clock for signatures; nil means time.Now.
	Now func() time.Time
}

// Webhook posts signed events to one URL from a background goroutine.
type Webhook struct {
	cfg        WebhookConfig
	mac        tink.MAC
	queue      chan Event
	ctx        context.Context // cancelled by Close: stops waits and in-flight POSTs
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	deliveries *prometheus.CounterVec
	// dest is the URL's scheme and host, all that is ever logged of it:
	// paths and queries (Slack-style URLs) and user-info hold secrets.
	dest string
}

// NewWebhook checks the configuration and starts the sender.
func NewWebhook(cfg WebhookConfig) (*Webhook, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		// The URL itself is not repeated: webhook URLs often carry a secret.
		return nil, errors.New("webhook URL: want an absolute http(s) URL")
	}
	if len(cfg.Secret) < 16 {
		return nil, errors.New("webhook secret: at least 16 bytes")
	}
	m, err := newMAC(cfg.Secret)
	if err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 10 * time.Second}
	}
	// Never follow a redirect: it would resend the signed body to wherever
	// the receiver points (another host, plain http, an internal address).
	// A 3xx is a failed delivery.
	client := *cfg.Client
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	cfg.Client = &client
	if cfg.Attempts <= 0 {
		cfg.Attempts = 8
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Minute
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 1024
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	w := &Webhook{
		cfg:   cfg,
		mac:   m,
		queue: make(chan Event, cfg.QueueSize),
		dest:  u.Scheme + "://" + u.Host,

		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentvault_webhook_deliveries_total",
			Help: "Webhook delivery attempts by result: ok, retry (failed, will retry), failed (gave up), dropped (queue full).",
		}, []string{"result"}),
	}
	if cfg.Registry != nil {
		cfg.Registry.MustRegister(w.deliveries)
	}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	w.wg.Add(1)
	go w.run()
	return w, nil
}

// Send queues an event and returns at once; it never blocks the caller.
func (w *Webhook) Send(typ string, data any) {
	ev := Event{ID: uuid.NewString(), Type: typ, Time: w.cfg.Now().UTC(), Data: data}
	select {
	case w.queue <- ev:
	default:
		w.deliveries.WithLabelValues("dropped").Inc()
		w.cfg.Logger.Error("webhook queue full: event dropped", "event", typ, "delivery", ev.ID)
	}
}

// Close stops the sender. Events still queued or waiting for a retry are
// dropped, with a log line each.
func (w *Webhook) Close() {
	w.cancel()
	w.wg.Wait()
	for {
		select {
		case ev := <-w.queue:
			w.cfg.Logger.Warn("webhook event not delivered before shutdown", "event", ev.Type, "delivery", ev.ID)
		default:
			return
		}
	}
}

func (w *Webhook) run() {
	defer w.wg.Done()
	for {
		select {
		case <-w.ctx.Done():
			return
		case ev := <-w.queue:
			w.deliver(ev)
		}
	}
}

// deliver tries one event until it is accepted, the attempts run out, or
// the webhook stops. Events are sent in order, one at a time.
func (w *Webhook) deliver(ev Event) {
	body, err := json.Marshal(ev)
	if err != nil {
		w.cfg.Logger.Error("webhook event does not encode", "event", ev.Type, "err", err)
		return
	}
	delay := w.cfg.Backoff
	for attempt := 1; ; attempt++ {
		err := w.post(ev, body)
		if err == nil {
			w.deliveries.WithLabelValues("ok").Inc()
			return
		}
		var perm permanentError
		if attempt >= w.cfg.Attempts || errors.As(err, &perm) {
			w.deliveries.WithLabelValues("failed").Inc()
			w.cfg.Logger.Error("webhook delivery failed: giving up", "event", ev.Type, "delivery", ev.ID, "destination", w.dest, "attempts", attempt, "err", err)
			return
		}
		w.deliveries.WithLabelValues("retry").Inc()
		// Full jitter around the exponential delay.
		wait := delay/2 + rand.N(delay/2+1)
		w.cfg.Logger.Warn("webhook delivery failed: will retry", "event", ev.Type, "delivery", ev.ID, "destination", w.dest, "attempt", attempt, "retry_in", wait, "err", err)
		select {
		case <-w.ctx.Done():
			w.cfg.Logger.Warn("webhook event not delivered before shutdown", "event", ev.Type, "delivery", ev.ID)
			return
		case <-time.After(wait):
		}
		delay = min(delay*2, w.cfg.MaxBackoff)
	}
}

type permanentError struct{ error }

func (w *Webhook) post(ev Event, body []byte) error {
	req, err := http.NewRequestWithContext(w.ctx, http.MethodPost, w.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return permanentError{err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "agentvault-webhook/1")
	req.Header.Set(HeaderEvent, ev.Type)
	req.Header.Set(HeaderDelivery, ev.ID)
	sig, err := sign(w.mac, w.cfg.Now(), body)
	if err != nil {
		return permanentError{err}
	}
	req.Header.Set(HeaderSignature, sig)
	resp, err := w.cfg.Client.Do(req)
	if err != nil {
		// *url.Error repeats the whole URL; keep only its cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("POST %s: %w", w.dest, err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		return permanentError{fmt.Errorf("receiver answered %d (a redirect, not followed)", resp.StatusCode)}
	case resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return fmt.Errorf("receiver answered %d", resp.StatusCode)
	default:
		// The receiver rejects this event (bad signature, gone): retrying
		// the same bytes cannot help.
		return permanentError{fmt.Errorf("receiver answered %d", resp.StatusCode)}
	}
}

// newMAC builds the webhook MAC: Tink's HMAC-SHA256 over the shared
// secret, without Tink's key-id prefix, so the tag is plain HMAC-SHA256 and
// any receiver can check it with its own HMAC library.
func newMAC(secret []byte) (tink.MAC, error) {
	params, err := tinkhmac.NewParameters(tinkhmac.ParametersOpts{
		KeySizeInBytes: len(secret), TagSizeInBytes: 32, HashType: tinkhmac.SHA256, Variant: tinkhmac.VariantNoPrefix,
	})
	if err != nil {
		return nil, fmt.Errorf("webhook MAC parameters: %w", err)
	}
	k, err := tinkhmac.NewKey(secretdata.NewBytesFromData(secret, insecuresecretdataaccess.Token{}), params, 0)
	if err != nil {
		return nil, fmt.Errorf("webhook MAC key: %w", err)
	}
	km := keyset.NewManager()
	id, err := km.AddKey(k)
	if err != nil {
		return nil, err
	}
	if err := km.SetPrimary(id); err != nil {
		return nil, err
	}
	h, err := km.Handle()
	if err != nil {
		return nil, err
	}
	return mac.New(h)
}

func signedData(ts string, body []byte) []byte {
	d := make([]byte, 0, len(ts)+1+len(body))
	d = append(d, ts...)
	d = append(d, '.')
	return append(d, body...)
}

func sign(m tink.MAC, t time.Time, body []byte) (string, error) {
	ts := strconv.FormatInt(t.Unix(), 10)
	tag, err := m.ComputeMAC(signedData(ts, body))
	if err != nil {
		return "", err
	}
	return "t=" + ts + ",v1=" + hex.EncodeToString(tag), nil
}

// Sign returns the signature header value for body sent at t.
func Sign(secret []byte, t time.Time, body []byte) (string, error) {
	m, err := newMAC(secret)
	if err != nil {
		return "", err
	}
	return sign(m, t, body)
}

// Verify checks a signature header against body: the MAC must match
// (compared in constant time) and the timestamp be within tolerance of
// now. It keeps no state, so the same signed body verifies again within
// the tolerance: receivers that act on events use a Receiver, which also
// rejects replays.
func Verify(secret []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	var ts, sig string
	for part := range strings.SplitSeq(header, ",") {
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sig = v
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || sig == "" {
		return errors.New("malformed signature header")
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return errors.New("signature timestamp outside tolerance")
	}
	got, err := hex.DecodeString(sig)
	if err != nil {
		return errors.New("signature mismatch")
	}
	m, err := newMAC(secret)
	if err != nil {
		return err
	}
	// Tink compares in constant time.
	if err := m.VerifyMAC(got, signedData(ts, body)); err != nil {
		return errors.New("signature mismatch")
	}
	return nil
}
