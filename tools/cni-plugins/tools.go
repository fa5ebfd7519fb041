//go:build tools

// Package tools pins the reference CNI plugins make e2e-k8s's nodes need
// beside weft-cni: loopback, which containerd's CRI runs for every
// sandbox's lo. Built by tools/gobuild.sh from this wrapper module.
package tools

import _ "github.com/containernetworking/plugins/plugins/main/loopback"
