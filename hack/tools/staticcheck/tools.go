//go:build tools

// Package tools records the linter command this module pins.
package tools

import (
	_ "honnef.co/go/tools/cmd/staticcheck"
)
