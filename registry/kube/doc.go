// Package kube is the registry backend for a Kubernetes cluster: the API
// server is weft's cluster state (`weftd --registry kube`, with the pod's
// in-cluster configuration or --kubeconfig). It implements
// registry.Registry over Node objects and registry.ObjectStore over
// Services, EndpointSlices, NetworkPolicies, Namespaces and Pods, all
// through client-go informers.
//
// # Leases are Nodes
//
// A node's subnet is its Node's spec.podCIDR (the IPv4 one of
// spec.podCIDRs), which kube-controller-manager allocates with
// --allocate-node-cidrs, as flannel requires: weft allocates nothing.
// Acquire waits for it, logging once, then writes what peers need as
// annotations on the node's own Node through the nodes/status subresource
// (weftnet.io/underlay, router-mac, vni, port, foreign, caps, holder; see the
// Annotation constants). A Node is a peer when it has an IPv4 podCIDR
// inside the cluster CIDR and weft's annotations; the others are listed
// with the reason by NotPeers, which `weft status` shows.
//
// Liveness, as in flannel's kube subnet manager: a lease is live while
// its Node exists and carries weft's annotations. It has no expiry
// (Lease.Expiry is zero; `weft peers` shows "-"): renewing by writing the
// Node would send an update to every node's informer every few seconds,
// n² traffic for nothing, and the cluster already removes a dead machine
// by deleting its Node. A weftd that crashes leaves its annotations, and
// peers keep routing its subnet to it: its pods are there, and the
// kubelet and the node lifecycle controller, not weft, decide that the
// node is gone.
//
// Renew reads the Node (one GET per renewal period, served from the API
// server's watch cache) and checks that the annotations are still this
// client's; if the Node is gone, the annotations were removed or changed,
// or another client wrote them since (holder), it fails with ErrLeaseLost
// and the Keeper acquires again. Its success or failure is the registry
// health weftd reports in `weft status`. Release removes the annotations
// (peers drop the node) if this client wrote them; the subnet stays the
// Node's, since weft never owned it. Acquire with AcquireRequest.Subnet
// set fails with ErrSubnetConflict if the podCIDR differs: a node does not
// move its running pods to another subnet. ErrPoolExhausted never occurs,
// and Options.Subnets and ReclaimAfter are not used.
//
// NetworkReady sets the Node's NetworkUnavailable condition to False
// (reason WeftIsUp) once weftd forwards.
//
// # Objects
//
// Five informers, each with a transform (trim.go) that keeps only what
// weft's service, policy and lease code read: a Pod keeps its namespace,
// name, UID, labels, node name, phase, IPs, Ready condition and named
// container ports, and nothing else. As kube-proxy does, Services and
// EndpointSlices labelled service.kubernetes.io/service-proxy-name or
// service.kubernetes.io/headless are not watched at all. Headless
// Services themselves arrive and the service compiler skips them.
//
// Watches (leases and objects alike) send one snapshot once the informers
// have synced, then coalesced changes: the initial list of 5,000 Nodes or
// 150,000 Pods is one event, and a consumer that falls behind gets the
// latest state of each changed key rather than every step. An update that
// changes nothing weft keeps (a pod's container statuses, a node's
// heartbeat) sends nothing.
//
// Put is a server-side apply (field manager "weft", forced), so `weft
// apply -f` creates or updates the object in the API server; Delete
// deletes it. Both return once the informer has seen the write. Get reads
// the API server. List and Watch read the informers' cache.
//
// # Outages
//
// client-go's reflectors re-list and re-watch by themselves with backoff.
// Meanwhile List and Watch keep the last known state (forwarding goes on),
// watch failures are logged (once a minute per resource), and Renew fails
// with ErrUnavailable, so the Keeper reports the registry degraded in
// `weft status`.
//
// # API verbs used (for deploy/'s ClusterRole)
//
// Always, by weftd:
//
//	""                   nodes            get, list, watch     Acquire/Renew/Release (get); the Node informer (list, watch)
//	""                   nodes/status     patch                weft's annotations; the NetworkUnavailable condition
//	""                   pods             list, watch          object informer
//	""                   namespaces       list, watch          object informer
//	""                   services         list, watch          object informer
//	discovery.k8s.io     endpointslices   list, watch          object informer
//	networking.k8s.io    networkpolicies  list, watch          object informer
//
// Only for `weft apply` / `weft delete` through weftd (ObjectStore Put,
// Get and Delete), on the same five object resources: get (Get), patch
// (Put: server-side apply), create (the API server also authorizes a
// server-side apply that creates an object as create), delete (Delete). A
// least-privilege DaemonSet leaves these out; `weft apply` then fails with
// ErrForbidden, whose message names the verb and resource refused and says
// to manage objects with kubectl or grant the verb (and carries the API
// server's own message); weftd's API answers it as 403 "forbidden".
package kube
