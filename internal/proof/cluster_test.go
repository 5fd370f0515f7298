package proof

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"testing"
)

// TestClusterTokenMatchesSpec recomputes the cluster token from the SPEC's
// formula with the standard library.
func TestClusterTokenMatchesSpec(t *testing.T) {
	h := hmac.New(sha256.New, tokenA)
	h.Write([]byte("relaytls-cluster-token/v1\ncluster-1\n7"))
	want := base64.RawURLEncoding.EncodeToString(h.Sum(nil))
	got, err := ClusterToken(tokenA, "cluster-1", 7)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatal("ClusterToken does not match the SPEC formula")
	}
	if _, err := ParseToken(got); err != nil {
		t.Fatalf("a derived cluster token must itself be a valid token: %v", err)
	}
}

func TestClusterTokenRefusesBadInput(t *testing.T) {
	type testCase struct {
		name       string
		root       Token
		cluster    string
		generation int64
		want       error
	}
	for _, tc := range []testCase{
		{name: "no root", root: nil, cluster: "c1", generation: 1, want: ErrNoToken},
		{name: "generation zero", root: tokenA, cluster: "c1", generation: 0, want: ErrBadGeneration},
		{name: "negative generation", root: tokenA, cluster: "c1", generation: -1, want: ErrBadGeneration},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ClusterToken(tc.root, tc.cluster, tc.generation); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	// A name with a newline would let "a\n1" collide with cluster "a", generation 1.
	if _, err := ClusterToken(tokenA, "a\n1", 1); err == nil {
		t.Fatal("a cluster name with a newline was accepted")
	}
}

// TestClusterTokenAttacks plays the attacker: a workload cluster holding its
// own cluster token tries to prove another cluster, an old generation, or the
// shared scope.
func TestClusterTokenAttacks(t *testing.T) {
	csr := []byte("csr of the victim")
	mine, _ := ClusterToken(tokenA, "attacker", 1)
	victimKeys, err := Keys(ScopePerCluster, []Token{tokenA}, "victim", 1)
	if err != nil {
		t.Fatal(err)
	}
	type testCase struct {
		name  string
		proof string
		keys  func() []Token
	}
	for _, tc := range []testCase{
		{
			name:  "my cluster token, victim's name",
			proof: Identity(mine, "victim", csr),
			keys:  func() []Token { return victimKeys },
		},
		{
			name: "old generation after a bump",
			proof: func() string {
				old, _ := ClusterToken(tokenA, "victim", 1)
				return Identity(old, "victim", csr)
			}(),
			keys: func() []Token {
				k, _ := Keys(ScopePerCluster, []Token{tokenA}, "victim", 2)
				return k
			},
		},
		{
			name: "a newer generation before the bump",
			proof: func() string {
				next, _ := ClusterToken(tokenA, "victim", 2)
				return Identity(next, "victim", csr)
			}(),
			keys: func() []Token { return victimKeys },
		},
		{
			name:  "shared-scope proof (made with the root token) against a per-cluster verifier",
			proof: Identity(tokenA, "victim", csr),
			keys:  func() []Token { return victimKeys },
		},
		{
			name: "per-cluster proof against a shared-scope verifier",
			proof: func() string {
				ct, _ := ClusterToken(tokenA, "victim", 1)
				return Identity(ct, "victim", csr)
			}(),
			keys: func() []Token {
				k, _ := Keys(ScopeShared, []Token{tokenA}, "victim", 1)
				return k
			},
		},
		{
			name: "cluster token derived from another root",
			proof: func() string {
				ct, _ := ClusterToken(tokenB, "victim", 1)
				return Identity(ct, "victim", csr)
			}(),
			keys: func() []Token { return victimKeys },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := VerifyIdentity(tc.keys(), "victim", csr, tc.proof); !errors.Is(err, ErrInvalidProof) {
				t.Fatalf("VerifyIdentity = %v, want ErrInvalidProof", err)
			}
		})
	}
}

func TestKeys(t *testing.T) {
	csr := []byte("csr")
	t.Run("per-cluster accepts the cluster's own token", func(t *testing.T) {
		ct, _ := ClusterToken(tokenA, "c1", 3)
		keys, err := Keys(ScopePerCluster, []Token{tokenA}, "c1", 3)
		if err != nil {
			t.Fatal(err)
		}
		if err := VerifyIdentity(keys, "c1", csr, Identity(ct, "c1", csr)); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("rotation: a cluster token from token.previous is accepted", func(t *testing.T) {
		old, _ := ClusterToken(tokenB, "c1", 1)
		keys, err := Keys(ScopePerCluster, []Token{tokenA, tokenB}, "c1", 1)
		if err != nil {
			t.Fatal(err)
		}
		if err := VerifyTunnel(keys, "c1", []byte("exp"), Tunnel(old, "c1", []byte("exp"))); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("shared accepts the root token", func(t *testing.T) {
		keys, err := Keys(ScopeShared, []Token{tokenA}, "anything", 1)
		if err != nil {
			t.Fatal(err)
		}
		if err := VerifyIdentity(keys, "c9", csr, Identity(tokenA, "c9", csr)); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("no roots", func(t *testing.T) {
		if _, err := Keys(ScopePerCluster, nil, "c1", 1); !errors.Is(err, ErrNoToken) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("unknown scope", func(t *testing.T) {
		if _, err := Keys("Global", []Token{tokenA}, "c1", 1); err == nil {
			t.Fatal("an unknown scope was accepted")
		}
	})
	t.Run("keys differ per cluster and generation", func(t *testing.T) {
		seen := map[string]string{}
		for _, c := range []string{"c1", "c2"} {
			for _, g := range []int64{1, 2, 10} {
				k, _ := ClusterToken(tokenA, c, g)
				if prev, dup := seen[string(k)]; dup {
					t.Fatalf("%s/%d derives the same token as %s", c, g, prev)
				}
				seen[string(k)] = c
			}
		}
		// generation 1 of "c1" and generation 11 of "c" must not collide
		a, _ := ClusterToken(tokenA, "c1", 1)
		b, _ := ClusterToken(tokenA, "c", 11)
		if string(a) == string(b) {
			t.Fatal("name and generation are not separated")
		}
	})
}

func TestParseScope(t *testing.T) {
	for in, want := range map[string]Scope{"": ScopePerCluster, "PerCluster": ScopePerCluster, "per-cluster": ScopePerCluster, "shared": ScopeShared, "Shared": ScopeShared} {
		if got, err := ParseScope(in); err != nil || got != want {
			t.Errorf("ParseScope(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseScope("global"); err == nil {
		t.Error("ParseScope accepted global")
	}
}

func TestExplain(t *testing.T) {
	csr := []byte("csr")
	roots := []Token{tokenA}
	check := func(p string) func([]Token) error {
		return func(keys []Token) error { return VerifyIdentity(keys, "c1", csr, p) }
	}
	gen1, _ := ClusterToken(tokenA, "c1", 1)
	other, _ := ClusterToken(tokenA, "c2", 3)
	type testCase struct {
		name  string
		scope Scope
		gen   int64
		proof string
		want  Mismatch
	}
	for _, tc := range []testCase{
		{name: "stale generation", scope: ScopePerCluster, gen: 3, proof: Identity(gen1, "c1", csr), want: MismatchStaleGeneration},
		{name: "root token against per-cluster", scope: ScopePerCluster, gen: 1, proof: Identity(tokenA, "c1", csr), want: MismatchScope},
		{name: "cluster token against shared", scope: ScopeShared, gen: 1, proof: Identity(gen1, "c1", csr), want: MismatchScope},
		{name: "another cluster's token", scope: ScopePerCluster, gen: 3, proof: Identity(other, "c1", csr), want: MismatchNone},
		{name: "wrong root", scope: ScopePerCluster, gen: 1, proof: Identity(tokenB, "c1", csr), want: MismatchNone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys, _ := Keys(tc.scope, roots, "c1", tc.gen)
			if err := check(tc.proof)(keys); !errors.Is(err, ErrInvalidProof) {
				t.Fatalf("the proof must fail first, got %v", err)
			}
			if got := Explain(tc.scope, roots, "c1", tc.gen, check(tc.proof)); got != tc.want {
				t.Fatalf("Explain = %q, want %q", got, tc.want)
			}
		})
	}
}
