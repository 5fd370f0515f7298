// Package metrics holds relay-issuer's own Prometheus metrics, served on the
// controller manager's metrics endpoint next to controller-runtime's.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

var (
	// Requests counts the CertificateRequests relay issuers decided, by
	// result ("signed" or "refused") and refusal reason (empty when signed).
	// A remote-mode issuer counts the management cluster's decisions.
	Requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "relay_issuer_certificaterequests_total",
		Help: "CertificateRequests signed or refused by relay issuers, by result and refusal reason.",
	}, []string{"result", "reason"})

	// Enrollments counts the issuance endpoint's calls by result ("signed",
	// "refused" or "failed") and reason.
	Enrollments = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "relay_issuer_enrollments_total",
		Help: "Issuance endpoint calls, by result and reason.",
	}, []string{"result", "reason"})

	// Renewals counts the endpoint's calls that renew by proof of possession
	// (a client certificate, no token proof), by result and reason; they are
	// counted in Enrollments too.
	Renewals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "relay_issuer_possession_renewals_total",
		Help: "Issuance endpoint calls renewing by proof of possession of the current client certificate, by result and reason.",
	}, []string{"result", "reason"})
)

func init() {
	ctrlmetrics.Registry.MustRegister(Requests, Enrollments, Renewals)
}
