// Package event is the wire form of modelreg serve's events: CloudEvents
// 1.0 in structured mode (one JSON document per HTTP POST), signed with
// HMAC-SHA256 so a receiver can tell a delivery came from its registry
// and is not a replay. Receivers import it to verify deliveries; the
// server uses it to send them (docs/events.md).
package event

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/modelreg/modelreg/pkg/wire"
)

// ContentType is CloudEvents' structured-mode JSON media type.
const ContentType = "application/cloudevents+json; charset=utf-8"

// Headers of every delivery. SignatureHeader carries the signature;
// DeliveryHeader and AttemptHeader help a receiver's logs (the event's id,
// in the body, is what to de-duplicate on).
const (
	SignatureHeader = "Modelreg-Signature"
	DeliveryHeader  = "Modelreg-Delivery"
	AttemptHeader   = "Modelreg-Attempt"
)

// DefaultTolerance is how far a delivery's signed time may be from the
// receiver's clock: older deliveries are refused as replays.
const DefaultTolerance = 5 * time.Minute

// CloudEvent is one event in CloudEvents 1.0 structured form.
type CloudEvent struct {
	SpecVersion     string         `json:"specversion"`
	ID              string         `json:"id"`
	Source          string         `json:"source"`
	Type            string         `json:"type"`
	Subject         string         `json:"subject,omitempty"`
	Time            time.Time      `json:"time"`
	DataContentType string         `json:"datacontenttype"`
	Data            wire.EventData `json:"data"`
}

// Sign returns the signature header of body sent at t:
// "t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">". Signing the
// time with the body is what lets a receiver refuse a replayed delivery.
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + mac(secret, ts, body)
}

func mac(secret []byte, ts string, body []byte) string {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(ts))
	h.Write([]byte("."))
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

// Errors Verify returns, for a receiver to log.
var (
	ErrNoSignature  = errors.New("no Modelreg-Signature header: not a delivery from modelreg serve")
	ErrBadSignature = errors.New("the signature does not match the body: wrong secret, or the body was changed")
	ErrStale        = errors.New("the signed time is outside the tolerance: a replay, or a clock that is off")
)

// Verify checks a delivery's signature header against its body, with the
// subscription's secret, and that its time is within tolerance of now.
// Several v1= values are accepted (one matching is enough), so a secret
// can be rotated without a gap.
func Verify(secret []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	if header == "" {
		return ErrNoSignature
	}
	var ts string
	var sigs []string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sigs = append(sigs, v)
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return fmt.Errorf("malformed %s header %q: expected t=<unix seconds>,v1=<hex>", SignatureHeader, header)
	}
	want := mac(secret, ts, body)
	ok := false
	for _, s := range sigs {
		if hmac.Equal([]byte(s), []byte(want)) {
			ok = true
		}
	}
	if !ok {
		return ErrBadSignature
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w (signed %s ago)", ErrStale, d.Round(time.Second))
	}
	return nil
}

// Decode reads a structured-mode CloudEvent (after Verify).
func Decode(body []byte) (*CloudEvent, error) {
	var e CloudEvent
	if err := json.Unmarshal(body, &e); err != nil {
		return nil, fmt.Errorf("not a CloudEvent: %w", err)
	}
	if e.SpecVersion != "1.0" || e.ID == "" || e.Type == "" || e.Source == "" {
		return nil, fmt.Errorf("not a CloudEvents 1.0 event: specversion %q, id %q, type %q, source %q", e.SpecVersion, e.ID, e.Type, e.Source)
	}
	return &e, nil
}
