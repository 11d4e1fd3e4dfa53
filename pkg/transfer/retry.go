package transfer

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"syscall"
	"time"

	"oras.land/oras-go/v2/registry/remote/errcode"
)

// retry runs fn until it succeeds, fails for good, or attempts run out.
// Blob bodies cannot be replayed by the HTTP transport, so transfers retry
// here, one blob at a time, reopening the file for each attempt: a failed
// blob never restarts the others.
func retry(ctx context.Context, attempts int, fn func() error) error {
	backoff := 250 * time.Millisecond
	var err error
	for i := 0; i < attempts; i++ {
		if err = fn(); err == nil || !retryable(err) || i == attempts-1 {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff *= 2
	}
	return err
}

// retryable reports whether err is transient: a 5xx, 408 or 429 answer, a
// reset or refused connection, or a body cut short.
func retryable(err error) bool {
	var resp *errcode.ErrorResponse
	if errors.As(err, &resp) {
		return resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var op *net.OpError
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.As(err, &op)
}
