//go:build tools

// Package kubebinaries only records the commands this module builds.
package kubebinaries

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
)
