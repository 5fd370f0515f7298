package integration

import (
	"testing"
	"time"

	"github.com/relaytls/relaytls/internal/access"
	"github.com/relaytls/relaytls/internal/creds"
	"github.com/relaytls/relaytls/internal/proof"
)

// TestTLSTokenRotation rotates the server's root token the way SPEC section
// 4 says: the token Secret gets the new token under token and the old one
// under token.previous. While both are mounted an agent still holding the
// old cluster token and one holding the new are both admitted; once
// token.previous is removed the old cluster token is refused.
func TestTLSTokenRotation(t *testing.T) {
	e := newEnv(t, envOpts{mode: access.ModeTLS})
	ss := e.srvSide
	oldRoot := e.tok
	newRoot := must[proof.Token](t)(proof.GenerateToken())
	oldCT := must[proof.Token](t)(proof.ClusterToken(oldRoot, cluster, 1))
	newCT := must[proof.Token](t)(proof.ClusterToken(newRoot, cluster, 1))
	hello := func(ct proof.Token) error {
		return rawHello(t, e.srvAddr, clientTLS(e), &mdCreds{mode: "tls", cluster: cluster, token: ct})
	}
	if err := hello(newCT); err == nil {
		t.Fatal("a cluster token from a root the server does not hold was accepted")
	}

	ss.write(t, ss.token, map[string][]byte{"token": append([]byte(newRoot), '\n'), creds.PreviousTokenFile: append([]byte(oldRoot), '\n')})
	waitFor(t, "the server to admit the new cluster token", 5*time.Second, func() bool { return hello(newCT) == nil })
	if err := hello(oldCT); err != nil {
		t.Fatalf("during the rotation the previous token's cluster token was refused: %v", err)
	}

	ss.write(t, ss.token, map[string][]byte{"token": append([]byte(newRoot), '\n')})
	waitFor(t, "the server to refuse the previous token's cluster token", 5*time.Second, func() bool { return hello(oldCT) != nil })
	if err := hello(newCT); err != nil {
		t.Fatalf("after the rotation the new cluster token was refused: %v", err)
	}
}
