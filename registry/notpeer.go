package registry

// NotPeer is a node the backend knows of that has no lease peers may use,
// and why: a Kubernetes Node without a podCIDR, or on which weftd never
// wrote its annotations. `weft status` lists them, so that a node missing
// from `weft peers` is explained.
type NotPeer struct {
	Node string `json:"node"`
	Why  string `json:"why"`
}

// NotPeerLister is a Registry that knows of nodes that are not peers (the
// kube backend: every Node object is one, with a lease or not).
type NotPeerLister interface {
	NotPeers() []NotPeer
}
