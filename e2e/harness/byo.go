package harness

import (
	"context"
)

// UserMaterial is what the user brings in a bring-your-own mode (3, 5 and
// 6), made in the two clusters exactly as Install makes it, for a suite
// that installs relaytls itself (the kind suite): the Secrets of the user's
// PKI and token, and in the management cluster of modes 3 and 6 the user's
// CA Issuer and server Certificate. The workload side of mode 6 (the
// agent's client certificate) is left to the caller. The Installation it
// returns has UserRoot and, with RenewEvery set, Renewed filled in; nothing
// runs.
func UserMaterial(ctx context.Context, o Options) (*Installation, error) {
	in := &Installation{Options: o}
	if err := in.userSecrets(ctx); err != nil {
		return nil, err
	}
	if err := in.userCertificates(ctx, o.Mgmt, "management"); err != nil {
		return nil, err
	}
	return in, nil
}
