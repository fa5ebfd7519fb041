// Package deploy holds weft's installation files: weft.yaml (the
// Kubernetes install: Namespace, ServiceAccount, ClusterRole and binding,
// ConfigMap, DaemonSet), 10-weft.conflist (the CNI network config) and
// weftd.service (a node without Kubernetes). The Go package exists for its
// test, which creates every object of weft.yaml in a real API server
// (internal/kubetest) and checks the ServiceAccount's rights, and to embed
// the files for the code that installs them (the kube-mode sim).
package deploy

import _ "embed"

// Manifest is weft.yaml.
//
//go:embed weft.yaml
var Manifest []byte

// Conflist is 10-weft.conflist.
//
//go:embed 10-weft.conflist
var Conflist []byte
