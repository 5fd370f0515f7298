package profiles

import (
	"strings"
	"testing"
)

func TestObjects(t *testing.T) {
	for _, mode := range Modes {
		for _, role := range Roles {
			objs, err := Objects(mode, role)
			if err != nil {
				t.Fatalf("%s/%s: %v", mode, role, err)
			}
			if len(objs) < 4 || objs[len(objs)-1].GetKind() == "" {
				t.Errorf("%s/%s: %d objects", mode, role, len(objs))
			}
			_, err = IssuerIdentity(mode, role)
			runs := mode == "mtls-self-signed" || mode == "mtls-byo-ca" || (mode == "tls-self-signed" && role == "management")
			if (err == nil) != runs {
				t.Errorf("%s/%s: IssuerIdentity error %v, want one only when no relay-issuer runs", mode, role, err)
			}
		}
	}
	id, err := IssuerIdentity("mtls-self-signed", "management")
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, o := range id {
		kinds = append(kinds, o.GetKind())
	}
	if kinds[0] != "Namespace" || !strings.Contains(strings.Join(kinds, ","), "ServiceAccount") || !strings.Contains(strings.Join(kinds, ","), "RoleBinding") {
		t.Errorf("identity kinds %v: want the Namespace first, then the ServiceAccount and RBAC", kinds)
	}
	if _, err := Objects("mtls", "management"); err == nil || !strings.Contains(err.Error(), `unknown mode "mtls"`) {
		t.Errorf("unknown mode: %v", err)
	}
	if _, err := Objects("insecure", "edge"); err == nil || !strings.Contains(err.Error(), `unknown role "edge"`) {
		t.Errorf("unknown role: %v", err)
	}
}
