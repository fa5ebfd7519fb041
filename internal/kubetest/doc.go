// Package kubetest runs a real Kubernetes control plane for a test: etcd,
// kube-apiserver and, when asked, kube-controller-manager, as processes in
// a network namespace of their own, built from the Go module proxy by
// `make tools` (tools/etcd, tools/kube) and found in $WEFT_TOOLS.
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
//
// Reaching it:
//   - In this process: cp.Config (a *rest.Config) and cp.Clientset dial
//     through sockets opened inside cp.Netns; nothing goes through the root
//     namespace.
//   - From a process (weftd --kubeconfig, kubectl): cp.Kubeconfig is the
//     admin kubeconfig. The process must run inside cp.Netns (nsenter
//     --net=cp.NetnsPath()) or inside a namespace joined to it with
//     cp.Attach, which adds a veth pair and a route to the API address.
//   - As a ServiceAccount: cp.ServiceAccountConfig asks the API server for
//     a token (TokenRequest) and writes a kubeconfig with it, for RBAC
//     checks and for daemons that must run with the rights deploy/ grants.
//
// What the control plane holds: API server on https://APIAddr:6443
// (certificates made here with crypto/x509; authentication by bearer token
// only; RBAC authorization; Service CIDR Options.ServiceCIDR). With
// ControllerManager: Node pod CIDRs (--allocate-node-cidrs out of
// Options.ClusterCIDR, /NodeCIDRMaskSize each), EndpointSlices for
// Services with selectors, every namespace's `default` ServiceAccount and
// kube-root-ca.crt, namespace deletion. No kubelet, scheduler or
// kube-proxy: Nodes and Pods are objects the test writes.
//
// Everything it makes is removed when it stops, on failure too: processes
// are ended by PID (and die with the test binary: parent-death signal),
// the namespace is deleted, the directory removed. The namespace name
// (testenv.UniqueName) and the directory (testenv.RecordPath) go into the
// test ledger, so a killed test binary's leftovers are swept by the next run.
package kubetest
