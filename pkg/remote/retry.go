package remote

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"syscall"
	"time"

	"oras.land/oras-go/v2/registry/remote/errcode"
	"oras.land/oras-go/v2/registry/remote/retry"
)

// RetryPolicy is modelreg's one retry policy, applied at one layer per
// request, so that a registry that keeps failing costs Attempts requests,
// not Attempts squared:
//
//   - the HTTP transport of Options.Client retries every request it can
//     replay (no body, or a body it can rewind: HEAD, GET of a manifest
//     by tag, POST opening an upload, PUT of a manifest or config blob);
//   - Do retries a whole transfer whose body is a stream the transport
//     cannot replay (a file uploaded while it is read and hashed, a blob
//     downloaded into a file, cut short half-way), and turns the
//     transport's retries off inside it, as go-containerregistry's
//     per-layer retry does (pkg/v1/remote/write.go).
type RetryPolicy struct {
	// Attempts is how many times a request or a transfer is tried, the
	// first one included; 1 never retries.
	Attempts int
	// Backoff is the wait after the first failure. It doubles after each
	// further failure (with 10% jitter, so that concurrent transfers do not
	// retry in step), up to MaxBackoff. A 429 answer's Retry-After is
	// waited instead, up to MaxBackoff.
	Backoff    time.Duration
	MaxBackoff time.Duration
}

// DefaultRetryPolicy tries 4 times, waiting about 0.25, 0.5 and 1 s in
// between (docs/cli.md): enough for a registry that drops a connection or
// sheds load for a moment, short enough that a registry that is down fails
// a command within seconds with an error that says so.
var DefaultRetryPolicy = RetryPolicy{Attempts: 4, Backoff: 250 * time.Millisecond, MaxBackoff: 4 * time.Second}

// withDefaults fills the zero fields of p from DefaultRetryPolicy.
func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.Attempts <= 0 {
		p.Attempts = DefaultRetryPolicy.Attempts
	}
	if p.Backoff <= 0 {
		p.Backoff = DefaultRetryPolicy.Backoff
	}
	if p.MaxBackoff <= 0 {
		p.MaxBackoff = max(DefaultRetryPolicy.MaxBackoff, p.Backoff)
	}
	return p
}

// backoff is the wait after failure number attempt (0 for the first).
func (p RetryPolicy) backoff(attempt int, resp *http.Response) time.Duration {
	return min(retry.ExponentialBackoff(p.Backoff, 2, 0.1)(attempt, resp), p.MaxBackoff)
}

// Do runs fn until it succeeds, fails with an error that trying again will
// not change, or has been tried p.Attempts times; it returns fn's last
// error. fn must start its transfer over on each call (reopen the file,
// fetch the blob again). The context fn receives turns the transport's
// retries off for the requests made with it: Do is the only layer that
// retries them.
func (p RetryPolicy) Do(ctx context.Context, fn func(ctx context.Context) error) error {
	p = p.withDefaults()
	inner := context.WithValue(ctx, noTransportRetries{}, true)
	for attempt := 0; ; attempt++ {
		err := fn(inner)
		if err == nil || attempt == p.Attempts-1 || !Transient(err) {
			return err
		}
		timer := time.NewTimer(p.backoff(attempt, nil))
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		}
	}
}

// noTransportRetries marks a context whose requests the transport sends
// once: a RetryPolicy.Do around them retries instead.
type noTransportRetries struct{}

// Transient reports whether err, from a request or a transfer, may not
// happen again: a 5xx, 408 or 429 answer, or a connection refused, reset,
// timed out or cut short. Cancellation is never transient.
func Transient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var resp *errcode.ErrorResponse
	if errors.As(err, &resp) {
		return transientStatus(resp.StatusCode)
	}
	var ne net.Error
	var op *net.OpError
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.As(err, &op) || errors.As(err, &ne) && ne.Timeout()
}

// transientStatus reports whether a registry answer may differ if asked again.
func transientStatus(code int) bool {
	return code >= 500 || code == http.StatusTooManyRequests || code == http.StatusRequestTimeout
}

// transport wraps base in p's retries, except for requests made under Do.
func (p RetryPolicy) transport(base http.RoundTripper) http.RoundTripper {
	p = p.withDefaults()
	return &retryTransport{
		base: base,
		retrying: &retry.Transport{Base: base, Policy: func() retry.Policy {
			return &retry.GenericPolicy{
				Retryable: func(resp *http.Response, err error) (bool, error) {
					if err != nil {
						return Transient(err), nil
					}
					return transientStatus(resp.StatusCode), nil
				},
				Backoff:  p.backoff,
				MaxWait:  p.MaxBackoff,
				MaxRetry: p.Attempts - 1,
			}
		}},
	}
}

// retryTransport sends a request through oras-go's retrying transport, or
// once when a RetryPolicy.Do retries it (a request whose body is a stream
// cannot be replayed by the transport anyway; the mark also stops the
// transport from retrying the requests around it, such as a POST opening
// the upload, which Do retries with the rest).
type retryTransport struct {
	base     http.RoundTripper
	retrying *retry.Transport
}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Context().Value(noTransportRetries{}) != nil {
		return t.base.RoundTrip(req)
	}
	return t.retrying.RoundTrip(req)
}
