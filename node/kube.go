package node

import (
	"context"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/registry"
)

// The seams for a Kubernetes registry (registry/kube), where the cluster,
// not weft, owns the Pod objects and the node's state:
//
//   - Config.KubePods: the object store's Pods are the API server's (the
//     kubelet's). The node publishes none of its own (podPublisher is
//     off: it would create and delete real Pods), and its attached pods
//     take their labels and named ports from the store (policy.go), which
//     Attach waits for briefly (waitPodKnown).
//   - A registry with NetworkReady is told once the node forwards (the
//     Node's NetworkUnavailable condition).
//   - A registry.NotPeerLister's nodes are shown in `weft status`.

// podKnownWait bounds how long Attach waits for the informer to have the
// pod it attaches: the Pod exists (with its labels) before the kubelet
// calls the CNI plugin, so this is the informer's lag, milliseconds.
const podKnownWait = 5 * time.Second

// waitPodKnown waits (bounded) until the object store holds the Pod
// ns/name, so that the policies selecting it by label isolate it from its
// first packet. Without the Pod (the informer far behind, or a pod the
// API server does not know) the attach goes on, logged: the pod is then in
// no policy's selection until its Pod arrives.
func (n *Node) waitPodKnown(ctx context.Context, ns, name string) {
	if !n.cfg.KubePods || n.svc == nil || ns == "" || name == "" {
		return
	}
	key := "Pod/" + ns + "/" + name
	known := func() bool {
		n.svc.mu.Lock()
		defer n.svc.mu.Unlock()
		_, ok := n.svc.view[key]
		return ok
	}
	deadline := time.Now().Add(podKnownWait)
	for !known() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			n.log.Warn("attaching a pod the object store does not hold yet: no policy selects it until it arrives", "pod", ns+"/"+name)
			return
		}
		sleepCtx(ctx, 20*time.Millisecond)
	}
}

// networkReadyReporter is a registry that tells the cluster the node's
// network is up (registry/kube: NetworkUnavailable=False).
type networkReadyReporter interface {
	NetworkReady(ctx context.Context, node string) error
}

// reportNetworkReady tells the registry, retrying with backoff until it
// has taken it or the node stops.
func (n *Node) reportNetworkReady() {
	r, ok := n.cfg.Registry.(networkReadyReporter)
	if !ok {
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		backoff := time.Second
		for n.ctx.Err() == nil {
			ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
			err := r.NetworkReady(ctx, n.cfg.NodeName)
			cancel()
			if err == nil {
				n.log.Info("node network reported ready to the registry")
				return
			}
			n.log.Warn("could not report the node's network ready; retrying", "err", err, "retry_in", backoff)
			if !sleepCtx(n.ctx, backoff) {
				return
			}
			backoff = min(2*backoff, 30*time.Second)
		}
	}()
}

// notPeers lists the nodes the registry knows that are not peers.
func (n *Node) notPeers() []api.NotPeer {
	l, ok := n.cfg.Registry.(registry.NotPeerLister)
	if !ok {
		return nil
	}
	var out []api.NotPeer
	for _, np := range l.NotPeers() {
		if np.Node != n.cfg.NodeName {
			out = append(out, api.NotPeer{Node: np.Node, Why: np.Why})
		}
	}
	return out
}
