package proof

const renewalContext = "relaytls-renewal-attestation/v1\n"

// RenewalAttestation is what the issuance endpoint puts on a
// CertificateRequest it creates for a renewal by proof of possession: an
// HMAC-SHA256 with the root token over the cluster, the serial (hex) of the
// client certificate the workload cluster presented over mTLS, and the new
// CSR (DER). Workload clusters hold cluster tokens, never the root token, so
// only the management side can make one; the CA-mode issuer checks it before
// it signs a request that carries no token proof.
func RenewalAttestation(root Token, cluster, serial string, csrDER []byte) string {
	return encode(mac(root, renewalContext, cluster, "\n", serial, "\n", CSRDigest(csrDER)))
}

// VerifyRenewalAttestation checks an attestation against every root token
// (token and, during a rotation, token.previous), in constant time.
func VerifyRenewalAttestation(roots []Token, cluster, serial string, csrDER []byte, presented string) error {
	return verify(roots, presented, func(t Token) []byte {
		return mac(t, renewalContext, cluster, "\n", serial, "\n", CSRDigest(csrDER))
	})
}
