// Package api is weftd's management interface: JSON over HTTP on a unix
// socket, a typed client for it, and the Prometheus view of a node.
//
// The package does not know the node. It declares what it needs from one
// (Service for the API, MetricsSource for metrics) and the node implements
// both; cmd/weftd wires them together. The wire types here are the stable
// contract between weftd and its clients (the weft CLI, scripts using
// `weft -o json`): field names are snake_case and are only ever added to.
//
// Endpoints (all under /v1):
//
//	GET    /v1/status                  Status
//	GET    /v1/ports                   []Port
//	POST   /v1/ports                   AttachRequest -> AttachResponse
//	DELETE /v1/ports/{pod_id}?ifname=  detach (ifname defaults to eth0)
//	GET    /v1/peers                   []Peer
//	GET    /v1/fdb                     []FDBEntry
//	GET    /v1/routes                  []Route
//	GET    /v1/neigh                   []Neighbour
//	GET    /v1/ipam                    IPAM
//	GET    /v1/subnets                 []Subnet
//	GET    /v1/counters                Counters
//	POST   /v1/trace                   TraceRequest -> TraceResponse
//
// A failed request answers with an HTTP status and an Error body; the
// status follows from the sentinel error (ErrNotFound, ErrConflict, ...)
// that the Service wrapped, and the client turns it back into an error that
// matches the same sentinel with errors.Is.
package api
