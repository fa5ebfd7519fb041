// Package service compiles Kubernetes Services into the frontends the
// switch's service stage load-balances (vswitch.ServiceSpec), as
// kube-proxy compiles them into iptables rules, and checks Services and
// EndpointSlices before they are stored.
//
// # Where endpoints come from
//
// A Service's endpoints are the EndpointSlices labelled
// kubernetes.io/service-name=<service> in its namespace. A Service with a
// selector and no EndpointSlice gets its endpoints the way the endpoints
// controller would make them: the running pods of its namespace whose
// labels match the selector, each port's targetPort resolved per pod (a
// name through the pod's named container ports; a pod without that name
// serves nothing on that port). Pods come from Pod objects with a pod IP:
// the ones nodes publish for their attached pods, or, later, the API
// server's. A backend whose node has no live lease is not ready.
//
// # What is skipped, as kube-proxy skips it
//
// Headless Services (clusterIP None), ExternalName Services, and Services
// labelled service.kubernetes.io/service-proxy-name (another proxy owns
// them). Address types other than IPv4 are refused at apply.
//
// # Checks
//
// CheckApply refuses a Service or EndpointSlice that weft cannot serve
// (cluster IP outside the service CIDR or already taken, SCTP, port 0,
// endpoints at addresses a Service cannot send to: loopback, link-local,
// multicast, broadcast, unspecified, or inside the service CIDR) with an
// error naming the object and field, before anything is stored; it allocates a cluster IP for a Service
// that has none, as the API server would. Compile checks again: the store
// may hold objects written by another version or by hand, and a bad one is
// skipped with a Problem, never taking the good ones down with it.
package service
