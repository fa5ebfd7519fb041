// Package kubecp runs a real Kubernetes control plane on this machine:
// etcd, kube-apiserver and, when asked, kube-controller-manager, as
// processes in a network namespace of their own, from the binaries `make
// tools` links into bin/tools (FindBinaries). Tests use it through
// internal/kubetest; `weft sim up --registry kube` runs one for its nodes.
//
//	cp, err := kubecp.Start(kubecp.Options{Netns: "ks1-k", Dir: dir, ControllerManager: true}, kubecp.FindBinaries())
//	...
//	cp.Attach(nodeNetnsPath)   // a veth pair and a route to APIAddr
//	// a process in that namespace: --kubeconfig cp.Kubeconfig
//	cp.Stop()
//
// What it holds: the API server on https://APIAddr:6443 (certificates made
// here with crypto/x509; authentication by bearer token only, the admin's
// in system:masters; RBAC authorization; Service CIDR Options.ServiceCIDR).
// With ControllerManager: Node pod CIDRs (--allocate-node-cidrs out of
// Options.ClusterCIDR, /NodeCIDRMaskSize each), EndpointSlices for
// Services with selectors, every namespace's `default` ServiceAccount and
// kube-root-ca.crt, namespace deletion. No kubelet, scheduler or
// kube-proxy: Nodes and Pods are objects the caller writes.
//
// Reaching it:
//   - In this process: cp.Config (a *rest.Config) dials through sockets
//     opened inside cp.Netns; nothing goes through the root namespace.
//   - From a process: cp.Kubeconfig, run inside cp.Netns (nsenter
//     --net=cp.NetnsPath()) or in a namespace joined with cp.Attach.
//   - As a ServiceAccount: cp.ServiceAccountConfig (TokenRequest).
//
// Lifetime: components die with the process that started them
// (parent-death signal) unless Options.Detach. A ControlPlane encodes as
// JSON; a later process decodes it and calls Stop, which ends the
// components by PID (only while their command line still names Dir: see
// Owns), deletes the namespace and removes Dir. Start removes everything
// it made when it fails.
package kubecp
