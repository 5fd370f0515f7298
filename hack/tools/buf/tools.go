//go:build tools

// Package tools records the command this module pins.
package tools

import (
	_ "github.com/bufbuild/buf/cmd/buf"
)
