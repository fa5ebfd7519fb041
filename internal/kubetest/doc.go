// Package kubetest is the testing layer over internal/kubecp: a real
// Kubernetes control plane (etcd, kube-apiserver and, when asked,
// kube-controller-manager in a network namespace of their own) for a
// test, skipped or failed as the environment says, stopped when the test
// or the test binary ends.
//
// One control plane per test binary is the usual shape (it starts in ~4 s
// on a quiet 2-core machine, more under load): the package's TestMain hands
// the options to Main, and each test asks Shared for the running one,
//
//	func TestMain(m *testing.M) {
//		os.Exit(kubetest.Main(m, kubetest.Options{Prefix: "wq", ControllerManager: true}))
//	}
//
//	func TestNodeInformer(t *testing.T) {
//		cp := kubetest.Shared(t) // skips or fails as testenv.RequireRoot does
//		cs := cp.Clientset(t)    // admin (system:masters), dials into cp.Netns
//		...
//	}
//
// A test that needs a control plane of its own (one it may break) calls
// Start, which stops it when the test ends. Tests of one binary share the
// Shared cluster's objects: name them uniquely (a namespace per test).
// How to reach it (Config, Kubeconfig, Attach, ServiceAccountConfig) and
// what it holds: see internal/kubecp.
//
// Everything it makes is removed when it stops, on failure too. The
// namespace name (testenv.UniqueName) and the directory (testenv.RecordPath)
// go into the test ledger, so a killed test binary's leftovers are swept by
// the next run.
package kubetest
