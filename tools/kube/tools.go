//go:build tools

// Package tools pins the Kubernetes commands tools/gobuild.sh builds from
// this wrapper module, so `go mod tidy` records every module (and go.sum
// line) they need. It is never compiled: the build tag keeps it out of
// every build, and the commands are main packages. The Makefile's GO_TOOLS
// says which of them are built; listing one here costs nothing until then.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
