package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/weftnet/weft/objects"
)

// NamespaceNameLabel is the label the API server puts on every namespace
// (since Kubernetes 1.21) with the namespace's name as its value, so that a
// namespaceSelector can pick one namespace by name. weft adds it too, so a
// policy written for a real cluster means the same here.
const NamespaceNameLabel = "kubernetes.io/metadata.name"

// Namespace is what policies need of a namespace: its labels.
type Namespace struct {
	Name   string
	Labels map[string]string
}

// NamedPort is one named container port of a pod: what a policy port
// given by name resolves to on that pod.
type NamedPort struct {
	Name     string
	Protocol corev1.Protocol // TCP when empty, as in the Pod API
	Port     int32
}

// Pod is what policies need of a pod: where it is, its labels, its IPv4
// address and its named container ports.
type Pod struct {
	Namespace string
	Name      string
	Labels    map[string]string
	IP        netip.Addr // IPv4; a pod without one can be selected but never matched by address
	Ports     []NamedPort
}

// Input is everything one Snapshot is compiled from.
type Input struct {
	Namespaces []Namespace
	Pods       []Pod
	Policies   []*networkingv1.NetworkPolicy
	// HostAddrs are this node's own addresses: traffic from them to a pod
	// is always allowed (kubelet probes; upstream: "traffic to and from the
	// node where a Pod is running is always allowed"). Other nodes'
	// addresses are ordinary outside addresses that ipBlock may match.
	HostAddrs []netip.Addr
}

// NamespaceFromObject takes a decoded Namespace (objects.Object.Namespace).
func NamespaceFromObject(ns *corev1.Namespace) Namespace {
	return Namespace{Name: ns.Name, Labels: ns.Labels}
}

// PodFromObject takes a decoded Pod: its status.podIP (IPv4; an IPv6 or
// empty one leaves IP unset) and the named ports of its containers.
func PodFromObject(p *corev1.Pod) (Pod, error) {
	out := Pod{Namespace: p.Namespace, Name: p.Name, Labels: p.Labels}
	if p.Status.PodIP != "" {
		ip, err := netip.ParseAddr(p.Status.PodIP)
		if err != nil {
			return Pod{}, fmt.Errorf("pod %s/%s: status.podIP %q: %w", p.Namespace, p.Name, p.Status.PodIP, err)
		}
		if ip.Is4() {
			out.IP = ip
		}
	}
	for _, c := range p.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name == "" {
				continue
			}
			out.Ports = append(out.Ports, NamedPort{Name: cp.Name, Protocol: cp.Protocol, Port: cp.ContainerPort})
		}
	}
	return out, nil
}

// InputFromObjects gathers the Namespaces, Pods and NetworkPolicies among
// objs (a registry listing; other kinds are skipped) into an Input with
// this node's host addresses. A Pod whose status.podIP does not parse is
// still taken, without an address, and reported in the returned error;
// the Input is usable either way.
func InputFromObjects(objs []objects.Object, hosts []netip.Addr) (Input, error) {
	in := Input{HostAddrs: hosts}
	var errs []error
	for _, o := range objs {
		switch {
		case o.Namespace != nil:
			in.Namespaces = append(in.Namespaces, NamespaceFromObject(o.Namespace))
		case o.Pod != nil:
			p, err := PodFromObject(o.Pod)
			if err != nil {
				errs = append(errs, err)
				p = Pod{Namespace: o.Pod.Namespace, Name: o.Pod.Name, Labels: o.Pod.Labels}
			}
			in.Pods = append(in.Pods, p)
		case o.NetworkPolicy != nil:
			in.Policies = append(in.Policies, o.NetworkPolicy)
		}
	}
	return in, errors.Join(errs...)
}

// Fingerprint identifies a policy's content: sha256 of its canonical
// encoding (objects.Encode), 12 hex digits. `weft policies` shows it, so
// whoever applied a policy can tell which version a node enforces.
func Fingerprint(np *networkingv1.NetworkPolicy) string {
	b, err := objects.Encode(objects.Object{Kind: objects.KindNetworkPolicy, NetworkPolicy: np})
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:6])
}
