// Package policytest is the NetworkPolicy proof harness, shaped as the
// upstream netpol e2e suite (kubernetes test/e2e/network/netpol): three
// namespaces x, y, z with pods a, b, c each, servers on TCP 80, 81 and
// UDP 80, 81, and per case a truth table of which ordered pod pairs may
// connect, built from the case's meaning, compared with what was observed.
//
// It knows nothing of how observations are made: the policy engine's
// tests observe its decisions, the sim observes real connections between
// namespaces. Both run the same Cases through Run.
package policytest

import (
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The logical names of the model; a Model maps namespaces to real names
// (the sim may prefix them), while tables and peers use these.
var (
	NamespaceKeys = []string{"x", "y", "z"}
	PodNames      = []string{"a", "b", "c"}
)

// Probe is one protocol and port every server listens on.
type Probe struct {
	Protocol corev1.Protocol
	Port     int32
}

func (p Probe) String() string { return fmt.Sprintf("%s/%d", p.Protocol, p.Port) }

// Probes are the four servers of every pod.
var Probes = []Probe{
	{corev1.ProtocolTCP, 80}, {corev1.ProtocolTCP, 81},
	{corev1.ProtocolUDP, 80}, {corev1.ProtocolUDP, 81},
}

// PortName is the container port name a pod gives a probe's server
// ("serve-80-tcp"), as upstream names them: what named-port cases use.
func PortName(p Probe) string {
	proto := "tcp"
	if p.Protocol == corev1.ProtocolUDP {
		proto = "udp"
	}
	return fmt.Sprintf("serve-%d-%s", p.Port, proto)
}

// Pod is one pod of the model.
type Pod struct {
	NSKey     string // x, y or z
	Namespace string // the namespace's real name
	Name      string // a, b or c
	IP        netip.Addr
}

// String is "x/a".
func (p *Pod) String() string { return p.NSKey + "/" + p.Name }

// Labels are the pod's labels: pod=<name>.
func (p *Pod) Labels() map[string]string { return map[string]string{"pod": p.Name} }

// Model is the nine pods in three namespaces.
type Model struct {
	Namespaces map[string]string // key (x) -> real name
	Pods       []*Pod            // x/a, x/b, x/c, y/a, ... in that order
}

// NewModel makes the model with namespace real names prefix+key ("" gives
// plain x, y, z). Pod addresses are the caller's to fill in.
func NewModel(prefix string) *Model {
	m := &Model{Namespaces: map[string]string{}}
	for _, k := range NamespaceKeys {
		m.Namespaces[k] = prefix + k
		for _, n := range PodNames {
			m.Pods = append(m.Pods, &Pod{NSKey: k, Namespace: prefix + k, Name: n})
		}
	}
	return m
}

// Pod returns the pod "x/a".
func (m *Model) Pod(nsKey, name string) *Pod {
	for _, p := range m.Pods {
		if p.NSKey == nsKey && p.Name == name {
			return p
		}
	}
	panic("policytest: no pod " + nsKey + "/" + name) // a typo in a case, not input
}

// NamespaceObjects are the namespaces as Kubernetes objects, labelled
// ns=<key>.
func (m *Model) NamespaceObjects() []*corev1.Namespace {
	var out []*corev1.Namespace
	for _, k := range NamespaceKeys {
		out = append(out, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: m.Namespaces[k], Labels: map[string]string{"ns": k}}})
	}
	return out
}

// PodObjects are the pods as Kubernetes objects: labels, status.podIP and
// one container with a named port per probe.
func (m *Model) PodObjects() []*corev1.Pod {
	var out []*corev1.Pod
	for _, p := range m.Pods {
		c := corev1.Container{Name: "server", Image: "weft-probe"}
		for _, pr := range Probes {
			c.Ports = append(c.Ports, corev1.ContainerPort{Name: PortName(pr), Protocol: pr.Protocol, ContainerPort: pr.Port})
		}
		po := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name, Labels: p.Labels()},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{c}},
		}
		if p.IP.IsValid() {
			po.Status.PodIP = p.IP.String()
		}
		out = append(out, po)
	}
	return out
}

// CoveringPrefix is the smallest prefix holding every pod's address: what
// ipBlock cases use for "the pod network".
func (m *Model) CoveringPrefix() netip.Prefix {
	first := m.Pods[0].IP
	bits := first.BitLen()
	for _, p := range m.Pods[1:] {
		for bits > 0 {
			pf, _ := first.Prefix(bits)
			if pf.Contains(p.IP) {
				break
			}
			bits--
		}
	}
	pf, _ := first.Prefix(bits)
	return pf
}
