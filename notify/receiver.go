package notify

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// ErrReplay reports an event a Receiver has already accepted. The sender
// retries an event whose answer it did not get, so answer a replay with
// 2xx: the event was delivered.
var ErrReplay = errors.New("event already received")

// MaxRemembered bounds the event ids a Receiver keeps; ids are forgotten
// once their signatures are too old to verify anyway.
const MaxRemembered = 100_000

// Receiver checks deliveries for a webhook endpoint: the signature over
// timestamp and body, the timestamp's age, that the headers agree with the
// signed body, and that no event id is accepted twice while its signature
// could still verify. It is safe for concurrent use.
type Receiver struct {
	secret    []byte
	tolerance time.Duration

	mu   sync.Mutex
	seen map[string]time.Time // event id -> when it may be forgotten
}

// NewReceiver returns a Receiver for a shared secret; tolerance is how old
// (or how far ahead) a signature's timestamp may be, a few minutes.
func NewReceiver(secret []byte, tolerance time.Duration) (*Receiver, error) {
	if _, err := newMAC(secret); err != nil {
		return nil, err
	}
	if tolerance <= 0 {
		return nil, errors.New("receiver tolerance must be positive")
	}
	return &Receiver{secret: append([]byte(nil), secret...), tolerance: tolerance, seen: map[string]time.Time{}}, nil
}

// Open verifies one delivery and returns its event. It fails with
// ErrReplay for an event id accepted before.
func (r *Receiver) Open(h http.Header, body []byte, now time.Time) (*Event, error) {
	if err := Verify(r.secret, h.Get(HeaderSignature), body, now, r.tolerance); err != nil {
		return nil, err
	}
	var ev Event
	if err := json.Unmarshal(body, &ev); err != nil || ev.ID == "" || ev.Type == "" {
		return nil, errors.New("signed body is not an event")
	}
	if d := h.Get(HeaderDelivery); d != "" && d != ev.ID {
		return nil, fmt.Errorf("%s header differs from the signed event id", HeaderDelivery)
	}
	if e := h.Get(HeaderEvent); e != "" && e != ev.Type {
		return nil, fmt.Errorf("%s header differs from the signed event type", HeaderEvent)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.seen[ev.ID]; dup {
		return nil, ErrReplay
	}
	if len(r.seen) >= MaxRemembered {
		for id, until := range r.seen {
			if now.After(until) {
				delete(r.seen, id)
			}
		}
		if len(r.seen) >= MaxRemembered {
			return nil, errors.New("too many recent events to check for replays")
		}
	}
	// A signature verifies while its timestamp is within tolerance; the
	// id is kept for twice that, to cover a resend signed later.
	r.seen[ev.ID] = now.Add(2 * r.tolerance)
	return &ev, nil
}
