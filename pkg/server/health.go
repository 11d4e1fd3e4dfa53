package server

import (
	"context"
	"net/http"
	"strconv"
	"time"
)

// Probes for load balancers and Kubernetes, answered before
// authentication (they carry no credentials) and kept out of the access
// log (they come every few seconds):
//
//   - /healthz: the process is up and serving HTTP (liveness).
//   - /readyz: storage and index answer (readiness); 503 otherwise, so a
//     replica that lost its store or database takes no traffic. It also
//     publishes the digests of the trust policy and the access policy in
//     force, in the body and in headers, so a load balancer or an operator
//     sees when replicas gate differently (a file updated on one only).
const (
	healthzPath = "/healthz"
	readyzPath  = "/readyz"
)

// Headers of /readyz carrying the policies' digests (empty without one).
const (
	headerPolicyDigest = "Modelreg-Policy-Digest"
	headerAccessDigest = "Modelreg-Access-Digest"
)

// readyTimeout bounds each readiness check, below the probe timeouts
// load balancers use (Kubernetes: 1 s by default; examples/k8s sets 5 s).
const readyTimeout = 4 * time.Second

// Readiness is what /readyz answers, as JSON.
type Readiness struct {
	// Ready is true when every check passed (status 200, else 503).
	Ready bool `json:"ready"`
	// Storage and Index are "ok" or what went wrong.
	Storage string `json:"storage"`
	Index   string `json:"index"`
	// PolicyDigest and AccessDigest identify the trust policy and the
	// access policy in force: replicas behind one balancer must agree.
	PolicyDigest string `json:"policyDigest"`
	AccessDigest string `json:"accessDigest"`
	// PendingRepositories counts repositories whose index entries lag
	// storage (the index lag metric).
	PendingRepositories int `json:"pendingRepositories"`
}

// probes answers /healthz and /readyz and hands every other request to next.
func (s *Server) probes(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case healthzPath:
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("Cache-Control", "no-store")
			w.Write([]byte("ok\n"))
			metricRequests.WithLabelValues("probe", methodLabel(r.Method), "200").Inc()
		case readyzPath:
			rd := s.Ready(r.Context())
			w.Header().Set(headerPolicyDigest, rd.PolicyDigest)
			w.Header().Set(headerAccessDigest, rd.AccessDigest)
			w.Header().Set("Cache-Control", "no-store")
			code := http.StatusOK
			if !rd.Ready {
				code = http.StatusServiceUnavailable
			}
			writeJSONAs(w, code, "application/json", rd)
			metricRequests.WithLabelValues("probe", methodLabel(r.Method), strconv.Itoa(code)).Inc()
		default:
			next.ServeHTTP(w, r)
		}
	})
}

// Ready checks storage and index, and reports the policies in force.
func (s *Server) Ready(ctx context.Context) Readiness {
	rd := Readiness{Storage: "ok", Index: "ok"}
	cctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	if err := storageReachable(cctx, s.st.driver); err != nil {
		rd.Storage = err.Error()
	}
	if s.idx != nil {
		p, err := s.idx.Pending(cctx)
		if err != nil {
			rd.Index = "the index does not answer: " + err.Error()
		} else {
			rd.PendingRepositories = len(p)
			metricIndexPending.Set(float64(len(p)))
		}
	} else if !s.opts.Bare {
		rd.Index = "the index is closed"
	}
	if s.gate != nil {
		if p := s.gate.policy(); p != nil {
			rd.PolicyDigest = p.Digest
		}
	} else if s.opts.Policy != nil {
		rd.PolicyDigest = s.opts.Policy.Digest
	}
	if s.access != nil {
		rd.AccessDigest = s.access.current().Digest
	}
	rd.Ready = rd.Storage == "ok" && rd.Index == "ok"
	return rd
}
