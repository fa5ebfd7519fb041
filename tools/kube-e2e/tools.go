//go:build tools

// Package tools pins what make e2e-k8s builds of Kubernetes' test tree:
// the e2e suite (e2e.test, a test binary: tools/gobuild.sh builds NAMEs
// ending in .test with go test -c) and agnhost, the program of the
// suite's test image. A wrapper of its own, beside tools/kube, so that
// the suite's dependencies (ginkgo, gomega, ...) never enter the
// wrapper `make tools` builds from.
package tools

import (
	_ "k8s.io/kubernetes/test/e2e"
	_ "k8s.io/kubernetes/test/images/agnhost"
)
