package endpoint

import (
	"context"
	"fmt"
	"testing"
	"time"

	issuerapi "github.com/cert-manager/issuer-lib/api/v1alpha1"
	"github.com/go-logr/logr"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/relaytls/relaytls/issuer/issuance"
)

type acceptAll struct{}

func (acceptAll) VerifyProof(context.Context, issuerapi.Issuer, string, []byte, string) error {
	return nil
}

func newTestServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	cfg.Namespace, cfg.IssuerName = "ns", "relay"
	s, err := New(cfg, nil, nil, acceptAll{}, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestLimiterMapsAreBounded names far more clusters and sources than the
// bounds allow: the maps never hold more than their bound.
func TestLimiterMapsAreBounded(t *testing.T) {
	s := newTestServer(t, Config{MaxClusters: 50, MaxSources: 20})
	now := time.Now()
	for i := range 10000 {
		s.allow(fmt.Sprintf("cluster-%d", i), now)
		_ = s.refuse(fmt.Sprintf("10.0.%d.%d", i/256, i%256), "x", now, issuance.Refusal(codes.PermissionDenied, "InvalidIdentityProof", "no"))
	}
	if n := s.clusters.Len(); n != 50 {
		t.Errorf("cluster limiters: %d, want the bound 50", n)
	}
	if n := s.sources.Len(); n != 20 {
		t.Errorf("source limiters: %d, want the bound 20", n)
	}
}

// TestRefusalBudgetPerSource spends one source's refusal budget: its next
// refusal is throttled, another source's is not.
func TestRefusalBudgetPerSource(t *testing.T) {
	s := newTestServer(t, Config{RefusedRatePerSource: 0.001, RefusedBurstPerSource: 3})
	now := time.Now()
	bad := issuance.Refusal(codes.PermissionDenied, "InvalidIdentityProof", "no")
	for i := range 3 {
		if err := s.refuse("192.0.2.1", "victim", now, bad); issuance.ReasonOf(err) != "InvalidIdentityProof" {
			t.Fatalf("refusal %d within the budget: got %v", i, err)
		}
	}
	err := s.refuse("192.0.2.1", "victim", now, bad)
	if status.Code(err) != codes.ResourceExhausted || issuance.ReasonOf(err) != "TooManyRefusals" {
		t.Fatalf("refusal beyond the budget: got %v, want ResourceExhausted/TooManyRefusals", err)
	}
	if err := s.refuse("192.0.2.2", "victim", now, bad); issuance.ReasonOf(err) != "InvalidIdentityProof" {
		t.Fatalf("another source's first refusal: got %v", err)
	}
}

// TestDurations checks the duration rules on their own.
func TestDurations(t *testing.T) {
	s := newTestServer(t, Config{MaxDuration: time.Hour})
	for _, tc := range []struct {
		seconds int64
		want    time.Duration
		refused bool
	}{
		{seconds: 0, want: 0},
		{seconds: 60, want: time.Minute},
		{seconds: 7200, want: time.Hour},
		{seconds: -1, refused: true},
		{seconds: maxDurationSeconds, want: time.Hour},
		{seconds: maxDurationSeconds + 1, refused: true},
	} {
		d, err := s.duration(tc.seconds)
		if tc.refused {
			if status.Code(err) != codes.InvalidArgument || issuance.ReasonOf(err) != "InvalidDuration" {
				t.Errorf("durationSeconds %d: want InvalidArgument/InvalidDuration, got %v", tc.seconds, err)
			}
			continue
		}
		if err != nil || d != tc.want {
			t.Errorf("durationSeconds %d: got %s, %v; want %s", tc.seconds, d, err, tc.want)
		}
	}
}
