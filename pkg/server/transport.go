package server

import (
	"bytes"
	"context"
	"io"
	"net/http"
)

// handlerTransport sends a request to an http.Handler in process: the
// server reading its own signatures and records with the same client code
// as `modelreg promote`, with no socket and no auth.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if h := r.URL.Host; h != "" && h != internalHost {
		// A redirect out of the server: object storage answering a blob
		// GET (storage.redirect, on by default for S3) with a presigned
		// URL, which only the network reaches.
		return storeTransport.RoundTrip(r)
	}
	in := r.Clone(context.WithValue(r.Context(), inProcessKey{}, true))
	in.RequestURI = r.URL.RequestURI()
	in.RemoteAddr = "127.0.0.1:0"
	if in.Body == nil {
		in.Body = http.NoBody
	}
	rec := newCapture()
	t.h.ServeHTTP(rec, in)
	return rec.response(r), nil
}

// storeTransport fetches what the server's own reads are redirected to.
var storeTransport http.RoundTripper = http.DefaultTransport

// inProcessKey marks a request the server sends itself (handlerTransport),
// which no client can: a Host header could be sent by anyone.
type inProcessKey struct{}

func inProcess(r *http.Request) bool {
	v, _ := r.Context().Value(inProcessKey{}).(bool)
	return v
}

// capture buffers one response of the in-process handler: small bodies
// only (manifests, records, signatures, error bodies).
type capture struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func newCapture() *capture { return &capture{header: http.Header{}} }

func (c *capture) Header() http.Header { return c.header }

func (c *capture) WriteHeader(code int) {
	if c.status == 0 {
		c.status = code
	}
}

func (c *capture) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	return c.body.Write(b)
}

func (c *capture) code() int {
	if c.status == 0 {
		return http.StatusOK
	}
	return c.status
}

func (c *capture) response(req *http.Request) *http.Response {
	return &http.Response{
		Status: http.StatusText(c.code()), StatusCode: c.code(), Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: c.header, Body: io.NopCloser(bytes.NewReader(c.body.Bytes())), ContentLength: int64(c.body.Len()), Request: req,
	}
}

// replay writes a captured response to w.
func (c *capture) replay(w http.ResponseWriter) {
	for k, v := range c.header {
		w.Header()[k] = v
	}
	w.WriteHeader(c.code())
	w.Write(c.body.Bytes())
}
