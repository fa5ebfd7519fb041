package kube

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The informers' transforms: each object is cut down, before the cache
// stores it, to what weft's service, policy and lease code read. A Pod as
// the API server sends it is ~5-20 KB (managedFields, the whole spec,
// status conditions and container statuses); what weft keeps of it is a
// few hundred bytes, which is what makes a 150,000-pod cluster affordable
// (TestTrimmedPodMemory measures it). The transforms are idempotent: an
// object trimmed once comes out the same.

// lastApplied is kubectl's copy of the whole object in an annotation.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// meta keeps the identity of an object and the labels selectors read.
func meta(m metav1.ObjectMeta, annotations map[string]string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion,
		Labels: m.Labels, Annotations: annotations, DeletionTimestamp: m.DeletionTimestamp,
	}
}

// withoutLastApplied drops kubectl's copy of the object, keeping the other
// annotations (a Service's may matter to the service compiler one day).
func withoutLastApplied(a map[string]string) map[string]string {
	if _, ok := a[lastApplied]; !ok {
		return a
	}
	out := make(map[string]string, len(a)-1)
	for k, v := range a {
		if k != lastApplied {
			out[k] = v
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// trimPod keeps namespace, name, UID, labels, node name, host network,
// phase, pod IPs, the Ready condition and the named container ports
// (regular containers and restartable init containers, the sidecars, whose
// ports serve too). Container names and unnamed ports are dropped: nothing
// in weft looks a container up by name, and only named ports are
// referenced (targetPort and NetworkPolicy ports by name).
func trimPod(p *corev1.Pod) *corev1.Pod {
	out := &corev1.Pod{
		ObjectMeta: meta(p.ObjectMeta, nil),
		Spec:       corev1.PodSpec{NodeName: p.Spec.NodeName, HostNetwork: p.Spec.HostNetwork},
		Status:     corev1.PodStatus{Phase: p.Status.Phase, PodIP: p.Status.PodIP, PodIPs: p.Status.PodIPs},
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			out.Status.Conditions = []corev1.PodCondition{{Type: c.Type, Status: c.Status}}
			break
		}
	}
	var ports []corev1.ContainerPort
	named := func(cs []corev1.Container, sidecarsOnly bool) {
		for _, c := range cs {
			if sidecarsOnly && (c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways) {
				continue
			}
			for _, cp := range c.Ports {
				if cp.Name != "" {
					ports = append(ports, corev1.ContainerPort{Name: cp.Name, ContainerPort: cp.ContainerPort, Protocol: cp.Protocol})
				}
			}
		}
	}
	named(p.Spec.Containers, false)
	named(p.Spec.InitContainers, true)
	if len(ports) > 0 {
		out.Spec.Containers = []corev1.Container{{Ports: ports}}
	}
	return out
}

func trimNamespace(n *corev1.Namespace) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: meta(n.ObjectMeta, nil)}
}

func trimService(s *corev1.Service) *corev1.Service {
	out := *s
	out.ObjectMeta = meta(s.ObjectMeta, withoutLastApplied(s.Annotations))
	out.Status.Conditions = nil
	return &out
}

func trimEndpointSlice(e *discoveryv1.EndpointSlice) *discoveryv1.EndpointSlice {
	out := *e
	out.ObjectMeta = meta(e.ObjectMeta, nil)
	return &out
}

func trimNetworkPolicy(p *networkingv1.NetworkPolicy) *networkingv1.NetworkPolicy {
	out := *p
	out.ObjectMeta = meta(p.ObjectMeta, withoutLastApplied(p.Annotations))
	return &out
}

// trimNode keeps the name, the pod CIDRs and weft's annotations: a Node's
// status (images, conditions, addresses) is most of its size and changes
// with every kubelet heartbeat that weft does not care about.
func trimNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	var ann map[string]string
	for k, v := range n.Annotations {
		if strings.HasPrefix(k, annotationPrefix) {
			if ann == nil {
				ann = map[string]string{}
			}
			ann[k] = v
		}
	}
	return &corev1.Node{
		ObjectMeta: meta(n.ObjectMeta, ann),
		Spec:       corev1.NodeSpec{PodCIDR: n.Spec.PodCIDR, PodCIDRs: n.Spec.PodCIDRs},
	}, nil
}

// trimObject is the object informers' transform.
func trimObject(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Pod:
		return trimPod(o), nil
	case *corev1.Namespace:
		return trimNamespace(o), nil
	case *corev1.Service:
		return trimService(o), nil
	case *discoveryv1.EndpointSlice:
		return trimEndpointSlice(o), nil
	case *networkingv1.NetworkPolicy:
		return trimNetworkPolicy(o), nil
	}
	return obj, nil
}
