package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/modelreg/modelreg/pkg/access"
	"github.com/modelreg/modelreg/pkg/config"
	"github.com/modelreg/modelreg/pkg/event"
	"github.com/modelreg/modelreg/pkg/index"
	"github.com/modelreg/modelreg/pkg/wire"
)

// dispatcher delivers the outbox: it turns new events into deliveries for
// each subscription that wants them, sends the deliveries that are due,
// and records each attempt. Deliveries are at least once: a crash between
// a receiver's answer and its record sends that delivery again, with the
// same event id.
type dispatcher struct {
	idx    *index.Index
	subs   map[string]config.Subscription
	source string
	keep   time.Duration
	client *http.Client
	log    *slog.Logger
	// wake is signalled by an operator's redelivery.
	wake chan struct{}
}

// retryRE matches the one write of the model API: a delivery retry.
var retryRE = regexp.MustCompile(`^events/deliveries/([0-9]+)/retry$`)

// poll is how often the dispatcher looks for new events when the index
// has changed, and for retries that came due.
const poll = 200 * time.Millisecond

func newDispatcher(idx *index.Index, cfg config.Events, source string, log *slog.Logger) *dispatcher {
	d := &dispatcher{idx: idx, subs: map[string]config.Subscription{}, source: source, keep: cfg.Keep, log: log, wake: make(chan struct{}, 1),
		client: &http.Client{
			// A receiver's redirect is not followed: the signature was made
			// for the URL the operator configured.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}}
	if cfg.Source != "" {
		d.source = cfg.Source
	}
	if pool := cfg.RootCAs(); pool != nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		d.client.Transport = t
	}
	for _, s := range cfg.Subscriptions {
		d.subs[s.Name] = s
	}
	return d
}

func (d *dispatcher) subscribers() []index.Subscriber {
	out := make([]index.Subscriber, 0, len(d.subs))
	for _, s := range d.subs {
		out = append(out, index.Subscriber{Name: s.Name, Wants: s.Wants})
	}
	return out
}

// run delivers until ctx is done: on one replica at a time (the leader),
// the others waiting to take over.
func (d *dispatcher) run(ctx context.Context) {
	for {
		release, ok, err := d.idx.TryLead(ctx, "events")
		if err != nil && ctx.Err() == nil {
			d.log.Error("events: asking to lead the delivery", "err", err)
		}
		if ok {
			d.lead(ctx)
			release()
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Second):
		}
	}
}

// lead is the leader's loop.
func (d *dispatcher) lead(ctx context.Context) {
	var seen uint64
	prune := time.Now()
	fanned := false
	for {
		if g := d.idx.Generation(); g != seen || !fanned {
			seen = g
			if _, err := d.idx.Fanout(ctx, d.subscribers()); err != nil {
				if ctx.Err() != nil {
					return
				}
				d.log.Error("events: fanning out new events", "err", err)
			} else {
				fanned = true
			}
		}
		d.deliverDue(ctx)
		if time.Since(prune) > time.Hour {
			prune = time.Now()
			if n, err := d.idx.PruneEvents(ctx, time.Now().Add(-d.keep)); err != nil {
				d.log.Error("events: pruning the event log", "err", err)
			} else if n > 0 {
				d.log.Info("events: pruned the event log", "events", n, "older than", d.keep)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-d.wake:
		case <-time.After(poll):
		}
	}
}

// deliverDue sends the due deliveries: subscriptions in parallel, each
// one's deliveries in event order, stopping at a failure (the rest wait
// behind it: see index.Due).
func (d *dispatcher) deliverDue(ctx context.Context) {
	due, err := d.idx.Due(ctx, time.Now(), 64)
	if err != nil {
		if ctx.Err() == nil {
			d.log.Error("events: reading due deliveries", "err", err)
		}
		return
	}
	bySub := map[string][]index.Due{}
	for _, x := range due {
		bySub[x.Delivery.Subscription] = append(bySub[x.Delivery.Subscription], x)
	}
	var wg sync.WaitGroup
	for name, list := range bySub {
		sub, ok := d.subs[name]
		if !ok {
			continue // a subscription removed from the configuration
		}
		wg.Go(func() {
			for _, x := range list {
				if ctx.Err() != nil {
					return
				}
				if !d.deliver(ctx, sub, x) {
					return // the receiver is failing: the rest wait for their retry
				}
			}
		})
	}
	wg.Wait()
}

// envelope is the CloudEvent of an outbox event.
func (d *dispatcher) envelope(e wire.Event) ([]byte, error) {
	var data wire.EventData
	if err := json.Unmarshal(e.Data, &data); err != nil {
		return nil, err
	}
	return json.Marshal(event.CloudEvent{SpecVersion: "1.0", ID: e.ID, Source: d.source, Type: e.Type, Subject: e.Subject,
		Time: e.Time, DataContentType: "application/json", Data: data})
}

// deliver makes one attempt and records it; it reports success.
func (d *dispatcher) deliver(ctx context.Context, sub config.Subscription, x index.Due) bool {
	body, err := d.envelope(x.Event)
	if err != nil {
		d.log.Error("events: an event that cannot be encoded", "seq", x.Event.Seq, "err", err)
		d.record(ctx, x, sub, 0, err.Error())
		return true
	}
	status, err := d.post(ctx, sub, x, body)
	if ctx.Err() != nil {
		return false // stopping: the attempt is made again at the next start
	}
	msg := ""
	if err != nil {
		msg = err.Error()
	} else if status < 200 || status > 299 {
		msg = fmt.Sprintf("the receiver answered %d", status)
	}
	return d.record(ctx, x, sub, status, msg)
}

func (d *dispatcher) post(ctx context.Context, sub config.Subscription, x index.Due, body []byte) (int, error) {
	rctx, cancel := context.WithTimeout(ctx, sub.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, sub.URL, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", event.ContentType)
	req.Header.Set("User-Agent", "modelreg-events/1")
	req.Header.Set(event.SignatureHeader, event.Sign(sub.Key(), time.Now(), body))
	req.Header.Set(event.DeliveryHeader, strconv.FormatInt(x.Delivery.ID, 10))
	req.Header.Set(event.AttemptHeader, strconv.Itoa(x.Delivery.Attempts+1))
	resp, err := d.client.Do(req)
	if err != nil {
		// The delivery log is readable by every reader of the registry,
		// and a subscription's URL can be a secret (a chat webhook): keep
		// it out of the error.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode, nil
}

// record stores an attempt's outcome: delivered, retried after a backoff
// that doubles (with jitter, at most an hour), or dead after the
// subscription's last attempt.
func (d *dispatcher) record(ctx context.Context, x index.Due, sub config.Subscription, status int, msg string) bool {
	a := index.Attempt{Status: status, Err: msg, Delivered: msg == ""}
	n := x.Delivery.Attempts + 1
	if !a.Delivered {
		if n >= sub.MaxAttempts {
			a.Dead = true
			d.log.Error("events: delivery dead after its last attempt", "subscription", sub.Name, "event", x.Event.ID, "type", x.Event.Type, "attempts", n, "err", msg)
		} else {
			wait := sub.Backoff << min(n-1, 30)
			if wait > time.Hour || wait <= 0 {
				wait = time.Hour
			}
			wait += time.Duration(rand.Int64N(int64(wait)/10 + 1))
			a.Next = time.Now().Add(wait)
			d.log.Warn("events: delivery failed; retrying", "subscription", sub.Name, "event", x.Event.ID, "attempt", n, "retry_in", wait.Round(time.Millisecond), "err", msg)
		}
	}
	switch {
	case a.Delivered:
		metricDeliveries.WithLabelValues("delivered").Inc()
	case a.Dead:
		metricDeliveries.WithLabelValues("dead").Inc()
	default:
		metricDeliveries.WithLabelValues("failed").Inc()
	}
	if err := d.idx.Attempted(context.WithoutCancel(ctx), x.Delivery.ID, a); err != nil {
		d.log.Error("events: recording a delivery attempt", "err", err)
	}
	return a.Delivered
}

// redeliver makes a delivery pending again and wakes the dispatcher.
func (d *dispatcher) redeliver(ctx context.Context, id int64) (bool, error) {
	ok, err := d.idx.Redeliver(ctx, id)
	if ok {
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
	return ok, err
}

// apiEvents lists the event log with each event's deliveries:
// ?after=SEQ&n=N&repository=REPO&type=TYPE, oldest first; with
// order=newest, newest first (below ?before=SEQ).
func (rt *router) apiEvents(r apiRequest) (any, error) {
	f := index.EventFilter{Repo: r.query.Get("repository"), Type: r.query.Get("type"), Limit: 100}
	if t := f.Type; t != "" && !slices.Contains(wire.EventTypes, t) {
		f.Type = config.EventTypePrefix + t
		if !slices.Contains(wire.EventTypes, f.Type) {
			return nil, &apiError{code: errQueryInvalid, msg: fmt.Sprintf("unknown event type %q; known: %s", t, strings.Join(wire.EventTypes, ", "))}
		}
	}
	var err error
	if a := r.query.Get("after"); a != "" {
		if f.After, err = strconv.ParseInt(a, 10, 64); err != nil || f.After < 0 {
			return nil, &apiError{code: errQueryInvalid, msg: fmt.Sprintf("after=%q: expected an event seq (a number)", a)}
		}
	}
	if n := r.query.Get("n"); n != "" {
		if f.Limit, err = strconv.Atoi(n); err != nil || f.Limit < 1 || f.Limit > 1000 {
			return nil, &apiError{code: errQueryInvalid, msg: fmt.Sprintf("n=%q: expected 1 to 1000", n)}
		}
	}
	switch r.query.Get("order") {
	case "", "oldest":
	case "newest":
		f.Newest = true
		if b := r.query.Get("before"); b != "" {
			if f.Before, err = strconv.ParseInt(b, 10, 64); err != nil || f.Before < 0 {
				return nil, &apiError{code: errQueryInvalid, msg: fmt.Sprintf("before=%q: expected an event seq (a number)", b)}
			}
		}
	default:
		return nil, &apiError{code: errQueryInvalid, msg: "order: expected oldest (the default) or newest"}
	}
	evs, err := rt.idx.Events(r.ctx, f)
	if err != nil {
		return nil, err
	}
	full := len(evs) == f.Limit
	kept := evs[:0:0]
	for _, e := range evs {
		if readable(r.ctx, e.Repository) {
			kept = append(kept, e)
		}
	}
	out := wire.Events{Events: kept}
	if full {
		// The seq to pass as after= (oldest first) or before= (newest
		// first); a page of events the subject may not read can be short.
		out.Next = evs[len(evs)-1].Seq
	}
	return out, nil
}

// apiDeliveries lists the newest deliveries: ?subscription=NAME&state=STATE&n=N.
func (rt *router) apiDeliveries(r apiRequest) (any, error) {
	state := r.query.Get("state")
	switch state {
	case "", index.DeliveryPending, index.DeliveryDelivered, index.DeliveryDead:
	default:
		return nil, &apiError{code: errQueryInvalid, msg: fmt.Sprintf("state=%q: expected pending, delivered or dead", state)}
	}
	limit := 100
	if n := r.query.Get("n"); n != "" {
		v, err := strconv.Atoi(n)
		if err != nil || v < 1 || v > 1000 {
			return nil, &apiError{code: errQueryInvalid, msg: fmt.Sprintf("n=%q: expected 1 to 1000", n)}
		}
		limit = v
	}
	ds, err := rt.idx.Deliveries(r.ctx, r.query.Get("subscription"), state, limit)
	if err != nil {
		return nil, err
	}
	kept := []wire.Delivery{}
	for _, d := range ds {
		if readable(r.ctx, d.Repository) {
			kept = append(kept, d)
		}
	}
	return wire.Deliveries{Deliveries: kept}, nil
}

// retryDelivery is POST events/deliveries/{id}/retry: a dead (or
// delivered) delivery is sent again, with the same event id.
func (rt *router) retryDelivery(w http.ResponseWriter, r *http.Request, id string) {
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil {
		serveError(w, errQueryInvalid, fmt.Sprintf("%q is not a delivery id", id))
		return
	}
	if rt.events == nil {
		serveError(w, errUnsupported, "events are not delivered by this server")
		return
	}
	d, found, err := rt.idx.Delivery(r.Context(), n)
	if err != nil {
		rt.apiError(w, err)
		return
	}
	if found && !rt.need(w, r, d.Repository, access.Admin) {
		return
	}
	ok, err := rt.events.redeliver(r.Context(), n)
	if err != nil {
		rt.apiError(w, err)
		return
	}
	if !ok {
		serveError(w, errNameUnknown, fmt.Sprintf("no delivery %d; list them at %sevents/deliveries", n, apiPrefix))
		return
	}
	w.WriteHeader(http.StatusAccepted)
}
