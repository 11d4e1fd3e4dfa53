package server

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	v2 "github.com/distribution/distribution/v3/registry/api/v2"
	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics is the server's Prometheus registry, served on /metrics: its
// own collectors only (not the process-wide default registry, which
// distribution's dependencies also write to).
var metrics = prometheus.NewRegistry()

var (
	// metricDenials counts refused requests: kind is access (the access
	// policy), gate (the trust policy) or auth (credentials refused).
	metricDenials = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "modelreg_denials_total",
		Help: "Requests refused, by kind (auth: credentials; access: the access policy; gate: the trust policy) and right.",
	}, []string{"kind", "right"})
	// metricDeliveries counts event delivery attempts by outcome.
	metricDeliveries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "modelreg_event_deliveries_total",
		Help: "Event delivery attempts, by outcome (delivered, failed, dead).",
	}, []string{"outcome"})
	// metricRequests counts requests by route class (a fixed set, see
	// routeClass: never the repository, which would let clients mint
	// series), method and status code.
	metricRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "modelreg_http_requests_total",
		Help: "HTTP requests answered, by route class (blob, manifest, upload, tags, referrers, catalog, api, parts, ui, ...), method and status code.",
	}, []string{"class", "method", "code"})
	// metricLatency is the time to answer a request, to its last byte: a
	// blob GET's includes the transfer, unless redirected to the store.
	metricLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "modelreg_http_request_duration_seconds",
		Help:    "Time from a request's arrival to its last response byte, by route class.",
		Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
	}, []string{"class"})
	// metricBytesIn and metricBytesOut count body bytes read from and
	// written to clients: with pulls redirected to the object store,
	// bytes out stay small while pulls grow.
	metricBytesIn = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "modelreg_http_request_bytes_total",
		Help: "Request body bytes read, by route class.",
	}, []string{"class"})
	metricBytesOut = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "modelreg_http_response_bytes_total",
		Help: "Response body bytes written, by route class.",
	}, []string{"class"})
	// metricGateDecisions counts the trust policy's decisions on writes
	// of protected stage tags.
	metricGateDecisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "modelreg_gate_decisions_total",
		Help: "Trust policy decisions on stage moves, by decision (allowed, refused).",
	}, []string{"decision"})
	// metricIndexPending is the index's lag behind storage: repositories
	// with a write in flight or a repair due (set on each scrape and
	// readiness check).
	metricIndexPending = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "modelreg_index_pending_repositories",
		Help: "Repositories whose index entries lag storage (writes in flight, repairs due).",
	})
)

func init() {
	metrics.MustRegister(metricDenials, metricDeliveries, metricRequests, metricLatency, metricBytesIn, metricBytesOut,
		metricGateDecisions, metricIndexPending,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
}

// metricsHandler serves /metrics in Prometheus' text format.
func metricsHandler() http.Handler {
	return promhttp.HandlerFor(metrics, promhttp.HandlerOpts{})
}

// instrument counts every request (refused ones too: it wraps the
// guard) by route class, and times it.
func instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		class := routeClass(r)
		rw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rw, r)
		metricRequests.WithLabelValues(class, methodLabel(r.Method), strconv.Itoa(rw.status)).Inc()
		metricLatency.WithLabelValues(class).Observe(time.Since(start).Seconds())
		metricBytesOut.WithLabelValues(class).Add(float64(rw.n))
		// Bytes in are the declared lengths: the request body is handed
		// on as the server made it, as wrapping it changed how an upload
		// part cut short was read (TestPartUploaderWaitsForABusyPart).
		if r.ContentLength > 0 {
			metricBytesIn.WithLabelValues(class).Add(float64(r.ContentLength))
		}
	})
}

// methodLabel keeps the method label to the methods the registry answers.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPut, http.MethodPost, http.MethodPatch, http.MethodDelete:
		return m
	}
	return "other"
}

// routeClass names a request's route from a fixed set, for metrics.
func routeClass(r *http.Request) string {
	p := r.URL.Path
	switch {
	case p == "/healthz" || p == "/readyz":
		return "probe"
	case p == "/metrics":
		return "metrics"
	case p == "/v2" || p == "/v2/":
		return "base"
	case p == "/v2/_catalog":
		return "catalog"
	case p == "/v2/_oci/ext/discover":
		return "discover"
	case p == TokenPath:
		return "token"
	case strings.HasPrefix(p, apiPrefix):
		if partsRE.MatchString(p) {
			return "parts"
		}
		return "api"
	case referrersRE.MatchString(p):
		return "referrers"
	case isPage(p):
		return "ui"
	}
	var match mux.RouteMatch
	if distRouter.Match(r, &match) && match.Route != nil {
		switch match.Route.GetName() {
		case v2.RouteNameManifest:
			return "manifest"
		case v2.RouteNameBlob:
			return "blob"
		case v2.RouteNameBlobUpload, v2.RouteNameBlobUploadChunk:
			return "upload"
		case v2.RouteNameTags:
			return "tags"
		}
	}
	return "other"
}
