package localcluster

import (
	"context"
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apiutil "github.com/cert-manager/cert-manager/pkg/api/util"
	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
)

// WaitForCertificateReady waits until cert-manager reports the Certificate
// namespace/name Ready for its current generation and returns it. When the
// timeout passes, the error shows the Certificate's last conditions.
func (c *Cluster) WaitForCertificateReady(ctx context.Context, namespace, name string, timeout time.Duration) (*cmapi.Certificate, error) {
	cert := &cmapi.Certificate{}
	var last string
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, cert); err != nil {
			last = err.Error()
			return false, client.IgnoreNotFound(err)
		}
		if r := apiutil.GetCertificateCondition(cert, cmapi.CertificateConditionReady); r != nil && r.Status == cmmeta.ConditionTrue && r.ObservedGeneration == cert.Generation {
			return true, nil
		}
		var conds []string
		for _, cond := range cert.Status.Conditions {
			conds = append(conds, fmt.Sprintf("%s=%s (%s: %s)", cond.Type, cond.Status, cond.Reason, cond.Message))
		}
		last = "conditions: " + strings.Join(conds, "; ")
		return false, nil
	})
	if err != nil {
		//lint:ignore ST1005 the message starts with the Kubernetes kind it names
		return nil, fmt.Errorf("Certificate %s/%s in cluster %s is not Ready after %s: %w; last seen: %s", namespace, name, c.Name, timeout, err, last)
	}
	return cert, nil
}
