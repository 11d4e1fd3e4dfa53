package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"oras.land/oras-go/v2/registry/remote/errcode"
)

var fast = RetryPolicy{Attempts: 4, Backoff: time.Millisecond, MaxBackoff: time.Millisecond}

// unavailable is a registry that answers 503 to everything and counts.
func unavailable(t *testing.T) (host string, count *atomic.Int64) {
	count = new(atomic.Int64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		count.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), count
}

func plainOptions() Options {
	plain := true
	return Options{PlainHTTP: &plain, Username: "u", Password: "p", Retry: fast}
}

// The transport tries a request the policy's number of times; under Do, it
// tries once per attempt of Do: 4 requests either way, never 16.
func TestOneRetryLayer(t *testing.T) {
	host, count := unavailable(t)
	c, err := plainOptions().Client(host)
	if err != nil {
		t.Fatal(err)
	}
	get := func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+"/v2/", nil)
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return &errcode.ErrorResponse{Method: req.Method, URL: req.URL, StatusCode: resp.StatusCode}
		}
		return nil
	}
	if err := get(context.Background()); err == nil {
		t.Fatal("a 503 registry answered")
	}
	if n := count.Swap(0); n != 4 {
		t.Errorf("the transport sent %d requests, want 4", n)
	}
	if err := fast.Do(context.Background(), get); err == nil {
		t.Fatal("a 503 registry answered")
	}
	if n := count.Swap(0); n != 4 {
		t.Errorf("Do around the transport sent %d requests, want 4", n)
	}
}

func TestDoStopsOnPermanentErrors(t *testing.T) {
	calls := 0
	err := fast.Do(context.Background(), func(context.Context) error {
		calls++
		return fmt.Errorf("layer refused: %w", &errcode.ErrorResponse{StatusCode: http.StatusNotFound})
	})
	if err == nil || calls != 1 {
		t.Errorf("a 404 was tried %d times (err %v), want once", calls, err)
	}
	calls = 0
	err = fast.Do(context.Background(), func(context.Context) error {
		calls++
		if calls < 3 {
			return io.ErrUnexpectedEOF
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Errorf("a body cut short twice: %d calls, err %v; want success on the third", calls, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	calls = 0
	err = RetryPolicy{Attempts: 4, Backoff: time.Hour}.Do(ctx, func(context.Context) error {
		calls++
		cancel()
		return io.ErrUnexpectedEOF
	})
	if !errors.Is(err, context.Canceled) || calls != 1 {
		t.Errorf("cancelled during the wait: %d calls, err %v", calls, err)
	}
}

func TestTransient(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{&errcode.ErrorResponse{StatusCode: 503}, true},
		{&errcode.ErrorResponse{StatusCode: 500}, true},
		{&errcode.ErrorResponse{StatusCode: 429}, true},
		{&errcode.ErrorResponse{StatusCode: 408}, true},
		{&errcode.ErrorResponse{StatusCode: 404}, false},
		{&errcode.ErrorResponse{StatusCode: 401}, false},
		{fmt.Errorf("reading: %w", io.ErrUnexpectedEOF), true},
		{&net.OpError{Op: "read", Err: syscall.ECONNRESET}, true},
		{&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, true},
		{fmt.Errorf("writing: %w", syscall.EPIPE), true},
		{context.Canceled, false},
		{context.DeadlineExceeded, false},
		{errors.New("blob failed digest verification"), false},
		{nil, false},
	} {
		if got := Transient(c.err); got != c.want {
			t.Errorf("Transient(%v) = %v", c.err, got)
		}
	}
}

func TestRetryPolicyDefaults(t *testing.T) {
	if got := (RetryPolicy{}).withDefaults(); got != DefaultRetryPolicy {
		t.Errorf("zero policy = %+v, want %+v", got, DefaultRetryPolicy)
	}
	p := RetryPolicy{Attempts: 2, Backoff: 10 * time.Second}.withDefaults()
	if p.Attempts != 2 || p.MaxBackoff != 10*time.Second {
		t.Errorf("partial policy = %+v", p)
	}
	for i := range 8 {
		if d := DefaultRetryPolicy.backoff(i, nil); d > DefaultRetryPolicy.MaxBackoff || d < DefaultRetryPolicy.Backoff*9/10 {
			t.Errorf("wait %d = %v, outside [%v, %v]", i, d, DefaultRetryPolicy.Backoff*9/10, DefaultRetryPolicy.MaxBackoff)
		}
	}
}
