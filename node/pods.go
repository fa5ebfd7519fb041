package node

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/objects"
	"github.com/weftnet/weft/registry"
)

// Pod metadata: every node publishes its attached pods as Pod objects in
// the object store (namespace, name, UID, labels, named container ports,
// spec.nodeName, status.podIP), the shape the API server's Pods have, so
// Service selectors and policy peers resolve the same way from either
// source. Only ports attached with a pod namespace and name are published.
//
// The publisher reconciles rather than replays: on every kick (attach,
// detach, a change in the store) and every podResync it lists the store's
// Pods, puts the ones this node runs that are missing or different, and
// deletes the ones naming this node that it no longer runs (detached while
// weftd was down). A store that does not answer is retried at the next
// resync; attach and detach never wait for it.
//
// Labels and named ports given at attach win; a pod attached without them
// (weft-cni has none: kubelet does not pass labels) keeps those of a Pod
// object applied with `weft apply`, and the publisher adds only where the
// pod runs.

const podResync = 10 * time.Second

type podPublisher struct {
	n     *Node
	kicks chan struct{}
}

func newPodPublisher(n *Node) *podPublisher {
	return &podPublisher{n: n, kicks: make(chan struct{}, 1)}
}

// kick asks for a reconcile soon; it never blocks. A nil publisher (the
// kube registry: the kubelet owns the Pods) ignores it.
func (p *podPublisher) kick() {
	if p == nil {
		return
	}
	select {
	case p.kicks <- struct{}{}:
	default:
	}
}

func (p *podPublisher) run() {
	defer p.n.wg.Done()
	t := time.NewTicker(podResync)
	defer t.Stop()
	p.sync()
	for {
		select {
		case <-p.n.ctx.Done():
			return
		case <-p.kicks:
		case <-t.C:
		}
		p.sync()
	}
}

// sync makes the store's Pods of this node equal to its attached pods.
func (p *podPublisher) sync() {
	n := p.n
	ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
	defer cancel()
	stored, err := n.svc.store.List(ctx)
	if err != nil {
		n.log.Warn("pod metadata: cannot read the object store; retrying", "err", err, "in", podResync)
		return
	}
	want := map[string]objects.Object{}
	for _, o := range p.desired() {
		want[o.Key()] = o
	}
	have := map[string]objects.Object{}
	for _, o := range stored {
		if o.Pod != nil {
			have[o.Key()] = o
		}
	}
	for key, o := range want {
		if old, ok := have[key]; ok {
			o = mergePublished(old, o)
			if samePod(old, o) {
				continue
			}
		}
		if _, err := n.svc.store.Put(ctx, o); err != nil {
			n.log.Warn("pod metadata: publish failed; retrying", "pod", key, "err", err)
		}
	}
	for key, o := range have {
		if _, ours := want[key]; ours || o.Pod.Spec.NodeName != n.cfg.NodeName {
			continue
		}
		if _, err := n.svc.store.Delete(ctx, key); err != nil {
			n.log.Warn("pod metadata: unpublish failed; retrying", "pod", key, "err", err)
		} else {
			n.log.Info("pod metadata: unpublished a pod this node no longer runs", "pod", key)
		}
	}
}

func samePod(a, b objects.Object) bool {
	ea, err1 := objects.Encode(a)
	eb, err2 := objects.Encode(b)
	return err1 == nil && err2 == nil && string(ea) == string(eb)
}

// desired is the Pod objects of the attached ports.
func (p *podPublisher) desired() []objects.Object {
	n := p.n
	n.ctlMu.Lock()
	defer n.ctlMu.Unlock()
	var out []objects.Object
	for _, port := range n.byKey {
		r := port.rec
		if r.PodNamespace == "" || r.PodName == "" {
			continue
		}
		o := podObject(n.cfg.NodeName, r)
		if err := registry.CheckObjectKey(o.Key()); err != nil {
			continue // not a Kubernetes name: nothing can select it
		}
		out = append(out, o)
	}
	return out
}

// podObject is the Pod a port record publishes.
func podObject(node string, r PortRecord) objects.Object {
	ip := r.Addr.Addr().String()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: r.PodNamespace, Name: r.PodName, UID: types.UID(r.PodUID), Labels: r.Labels,
		},
		Spec: corev1.PodSpec{NodeName: node},
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
		},
	}
	if len(r.ContainerPorts) > 0 {
		pod.Spec.Containers = []corev1.Container{{Name: "pod", Ports: containerPorts(r.ContainerPorts)}}
	}
	return objects.Object{Kind: objects.KindPod, Pod: pod}
}

func containerPorts(ps []api.ContainerPort) []corev1.ContainerPort {
	out := make([]corev1.ContainerPort, len(ps))
	for i, p := range ps {
		out[i] = corev1.ContainerPort{Name: p.Name, ContainerPort: int32(p.Port), Protocol: corev1.Protocol(p.Protocol)}
	}
	return out
}

// mergePublished keeps what a stored Pod says that the attach did not:
// labels and containers applied with `weft apply`.
func mergePublished(stored, pub objects.Object) objects.Object {
	pod := pub.Pod.DeepCopy()
	if len(pod.Labels) == 0 {
		pod.Labels = stored.Pod.Labels
	}
	if len(pod.Spec.Containers) == 0 {
		pod.Spec.Containers = stored.Pod.Spec.Containers
	}
	if pod.UID == "" {
		pod.UID = stored.Pod.UID
	}
	pod.Annotations = stored.Pod.Annotations
	return objects.Object{Kind: objects.KindPod, Pod: pod}
}

// applyPodMeta is the other direction, for `weft apply` of a Pod that a
// node published: the applied labels, annotations and containers, with
// the node, UID and status the node published.
func applyPodMeta(stored, applied objects.Object) objects.Object {
	pod := applied.Pod.DeepCopy()
	pod.Spec.NodeName = stored.Pod.Spec.NodeName
	pod.Status = stored.Pod.Status
	if pod.UID == "" {
		pod.UID = stored.Pod.UID
	}
	return objects.Object{Kind: objects.KindPod, Pod: pod}
}

// podsChanged asks the publisher to reconcile after an attach or detach.
func (n *Node) podsChanged() {
	if n.svc != nil {
		n.svc.pods.kick()
	}
}
