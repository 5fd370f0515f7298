package proof

import (
	"errors"
	"fmt"
	"strconv"
)

const clusterTokenContext = "relaytls-cluster-token/v1\n"

// DefaultGeneration is the token generation of a cluster whose RelayCluster
// does not set one (SPEC section 8).
const DefaultGeneration int64 = 1

// Scope says which key a verifier checks a cluster's proofs with.
type Scope string

const (
	// ScopePerCluster (the default): each workload cluster holds only its
	// cluster token, derived from the root token, its name and its token
	// generation, so a token proves one cluster and no other.
	ScopePerCluster Scope = "PerCluster"
	// ScopeShared is the seed's literal flow: every cluster holds the root
	// token itself, and any holder can claim any cluster name.
	ScopeShared Scope = "Shared"
)

// ParseScope accepts PerCluster/per-cluster and Shared/shared; "" is PerCluster.
func ParseScope(s string) (Scope, error) {
	switch s {
	case "", "PerCluster", "per-cluster", "percluster":
		return ScopePerCluster, nil
	case "Shared", "shared":
		return ScopeShared, nil
	}
	return "", fmt.Errorf("token scope %q is not PerCluster or Shared", s)
}

// ErrBadGeneration is returned for a token generation below 1.
var ErrBadGeneration = errors.New("the token generation must be at least 1")

// ClusterToken derives the cluster token of one workload cluster (SPEC
// section 4):
//
//	base64url_nopad(HMAC-SHA256(root, "relaytls-cluster-token/v1\n" + cluster + "\n" + generation))
//
// The result is a Token of 43 characters; it is what the workload cluster
// stores and makes its proofs with. Knowing one cluster token tells nothing
// about another cluster's, nor about the root token.
func ClusterToken(root Token, cluster string, generation int64) (Token, error) {
	if len(root) == 0 {
		return nil, ErrNoToken
	}
	if err := ValidateCluster(cluster); err != nil {
		return nil, err
	}
	if generation < 1 {
		return nil, ErrBadGeneration
	}
	return Token(encode(mac(root, clusterTokenContext, cluster, "\n", strconv.FormatInt(generation, 10)))), nil
}

// Keys are the keys a verifier checks one cluster's proofs with: under
// ScopePerCluster the cluster tokens derived from each root token (the
// current one and, during a rotation, the previous one) for the cluster's
// generation; under ScopeShared the root tokens themselves. Only the named
// cluster's keys are returned, so a proof made with another cluster's token
// never matches.
func Keys(scope Scope, roots []Token, cluster string, generation int64) ([]Token, error) {
	if len(roots) == 0 {
		return nil, ErrNoToken
	}
	switch scope {
	case ScopeShared:
		return roots, nil
	case ScopePerCluster, "":
		keys := make([]Token, 0, len(roots))
		for _, r := range roots {
			k, err := ClusterToken(r, cluster, generation)
			if err != nil {
				return nil, err
			}
			keys = append(keys, k)
		}
		return keys, nil
	}
	return nil, fmt.Errorf("token scope %q is not PerCluster or Shared", scope)
}

// Mismatch explains a proof that failed with ErrInvalidProof, for a refusal's
// reason only: it never makes a failed proof pass.
type Mismatch string

const (
	// MismatchNone: the proof matches no key this package can name (another
	// cluster's token, a wrong or unknown token, a replay).
	MismatchNone Mismatch = ""
	// MismatchStaleGeneration: the proof was made with an older token
	// generation of the same cluster, invalidated by a bump.
	MismatchStaleGeneration Mismatch = "StaleGeneration"
	// MismatchScope: the proof was made for the other token scope (the root
	// token against a per-cluster verifier, or a cluster token against a
	// shared one).
	MismatchScope Mismatch = "Scope"
)

// maxStaleGenerations bounds how many older generations Explain tries.
const maxStaleGenerations = 16

// Explain tells why a proof that check refuses was refused, by trying the
// keys of the other scope and of up to 16 older generations. check is the
// verification that failed, applied to other keys.
func Explain(scope Scope, roots []Token, cluster string, generation int64, check func([]Token) error) Mismatch {
	if len(roots) == 0 {
		return MismatchNone
	}
	other := ScopeShared
	if scope == ScopeShared {
		other = ScopePerCluster
	}
	if keys, err := Keys(other, roots, cluster, generation); err == nil && check(keys) == nil {
		return MismatchScope
	}
	if scope == ScopeShared {
		return MismatchNone
	}
	for g := generation - 1; g >= 1 && g >= generation-maxStaleGenerations; g-- {
		if keys, err := Keys(ScopePerCluster, roots, cluster, g); err == nil && check(keys) == nil {
			return MismatchStaleGeneration
		}
	}
	return MismatchNone
}
