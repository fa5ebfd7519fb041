package vswitch

import (
	"net/netip"
	"time"
)

// This file is the contract between the control plane, which compiles
// Kubernetes Services and EndpointSlices (objects/, node/), and the
// switch's service stage, which load-balances new flows to a Service's
// backends and keeps the choice in conntrack. The control plane hands the
// switch the whole set with
//
//	func (s *Switch) SetServices(svcs []ServiceSpec) error
//
// which validates it, builds the lookup tables (a Maglev table per
// frontend) off the hot path and swaps them in atomically, as SetRoutes
// does for routes. Flows already in conntrack keep their backend until
// the backend leaves the set (then they are flushed: UDP) or reset/expire
// (TCP), as the service stage documents.

// ServiceSpec is one frontend of a Service: one cluster IP, port and
// protocol (a Service with three ports is three ServiceSpecs).
type ServiceSpec struct {
	// Name identifies the frontend in trace, counters and metrics:
	// "namespace/name:port-name" (or ":port-number" when unnamed).
	Name string
	// ClusterIP is the virtual address, inside the service CIDR.
	ClusterIP netip.Addr
	// Port and Proto (6 TCP, 17 UDP) of the frontend.
	Port  uint16
	Proto uint8
	// NodePort, when non-zero, also exposes the frontend on every node
	// address at that port (type NodePort / LoadBalancer).
	NodePort uint16
	// Backends are every endpoint known for the frontend, ready or not;
	// the stage picks among the eligible ones (see Backend).
	Backends []ServiceBackend
	// AffinityTimeout > 0 is sessionAffinity ClientIP with that
	// timeout: one client address keeps its backend until it has been idle
	// that long. 0 means no affinity.
	AffinityTimeout time.Duration
	// InternalLocal is internalTrafficPolicy: Local: pods and the node reach
	// only backends on this node; with none, the flow is dropped (counted).
	InternalLocal bool
	// ExternalLocal is externalTrafficPolicy: Local: NodePort traffic goes
	// only to local backends and keeps the client's source address.
	ExternalLocal bool
}

// ServiceBackend is one endpoint of a frontend.
type ServiceBackend struct {
	Addr netip.Addr // pod IP, inside the cluster CIDR
	Port uint16     // target port
	// Ready: takes new flows. Serving and Terminating follow the
	// EndpointSlice conditions: as kube-proxy does, a frontend with no
	// ready backend falls back to backends that are serving and
	// terminating, so connections drain rather than fail.
	Ready       bool
	Serving     bool
	Terminating bool
	// Local: the backend runs on this node (for the traffic policies).
	Local bool
}
