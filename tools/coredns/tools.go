//go:build tools

// Package tools pins CoreDNS (the cluster DNS of make e2e-k8s's cluster),
// built by tools/gobuild.sh from this wrapper module.
package tools

import _ "github.com/coredns/coredns"
