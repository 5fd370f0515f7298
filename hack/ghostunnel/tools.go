//go:build tools

// Package ghostunnel pins the ghostunnel release `make bench` compares the
// relay sidecar with. The module proxy does not list ghostunnel's
// versions, so `go install …@version` is refused; and its pkcs11 support
// needs cgo. build.sh builds it from this module with CGO_ENABLED=1.
package ghostunnel

import (
	_ "github.com/ghostunnel/ghostunnel"
)
