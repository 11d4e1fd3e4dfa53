package server

import (
	"net/http"

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
)

func init() {
	metrics.MustRegister(metricDenials, metricDeliveries,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
}

// metricsHandler serves /metrics in Prometheus' text format.
func metricsHandler() http.Handler {
	return promhttp.HandlerFor(metrics, promhttp.HandlerOpts{})
}
