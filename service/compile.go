package service

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/weftnet/weft/objects"
	"github.com/weftnet/weft/packet"
	vswitch "github.com/weftnet/weft/switch"
)

// Input is what one compilation sees.
type Input struct {
	// Node is this node's name: backends on it are Local.
	Node  string
	CIDRs CIDRs
	// Objects is the object store's view; kinds other than Service,
	// EndpointSlice and Pod are ignored.
	Objects []objects.Object
	// LiveNode reports whether a node has a live lease; a backend on a
	// node that does not is not ready. nil: every node is live.
	LiveNode func(node string) bool
}

// Result is one compilation.
type Result struct {
	// Specs are the frontends for the switch, sorted by name; they pass
	// the switch's checks (one spec per Service port, backends unique).
	Specs []vswitch.ServiceSpec
	// Services summarise every stored Service, sorted by namespace/name,
	// for `weft services`.
	Services []Summary
	// Problems are the objects skipped as invalid.
	Problems []error
}

// Summary is one Service as weft serves it.
type Summary struct {
	Namespace string
	Name      string
	ClusterIP netip.Addr // invalid when none
	Ports     []corev1.ServicePort
	// Ready and Total count distinct endpoint addresses over all ports.
	Ready, Total int
	// Source is where endpoints came from: "EndpointSlice", "selector",
	// or "none".
	Source string
	// Skipped says why the Service has no frontends ("headless",
	// "invalid: ..."); "" when it has them.
	Skipped string
}

// Compile turns the Services of in.Objects into frontends.
func Compile(in Input) Result {
	var res Result
	idx := index(in, &res)
	taken := map[netip.Addr]string{}
	for _, svc := range idx.services {
		key := svc.Namespace + "/" + svc.Name
		sum := Summary{Namespace: svc.Namespace, Name: svc.Name, Source: "none"}
		if ip, err := netip.ParseAddr(svc.Spec.ClusterIP); err == nil {
			sum.ClusterIP = ip
		}
		if r := skipReason(svc); r != "" {
			sum.Skipped = r
			res.Services = append(res.Services, sum)
			continue
		}
		err := checkService(svc, in.CIDRs)
		if err == nil && taken[sum.ClusterIP] != "" {
			err = fmt.Errorf("spec.clusterIP %s: already taken by Service %s", sum.ClusterIP, taken[sum.ClusterIP])
		}
		if err != nil {
			res.Problems = append(res.Problems, fmt.Errorf("Service %s: %w", key, err))
			sum.Skipped = "invalid: " + err.Error()
			res.Services = append(res.Services, sum)
			continue
		}
		taken[sum.ClusterIP] = key
		specs := idx.frontends(svc, sum.ClusterIP, &sum)
		res.Specs = append(res.Specs, specs...)
		res.Services = append(res.Services, sum)
	}
	slices.SortFunc(res.Specs, func(a, b vswitch.ServiceSpec) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(res.Services, func(a, b Summary) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return res
}

// indexed is the input sorted for lookups.
type indexed struct {
	in       Input
	services []*corev1.Service                       // oldest first: the first claim on an IP wins
	slices   map[string][]*discoveryv1.EndpointSlice // by namespace/service
	pods     map[string][]*corev1.Pod                // running pods with an IP, by namespace
}

func index(in Input, res *Result) *indexed {
	idx := &indexed{in: in, slices: map[string][]*discoveryv1.EndpointSlice{}, pods: map[string][]*corev1.Pod{}}
	for _, o := range in.Objects {
		switch {
		case o.Service != nil:
			idx.services = append(idx.services, o.Service)
		case o.EndpointSlice != nil:
			es := o.EndpointSlice
			if err := checkSlice(es, in.CIDRs); err != nil {
				res.Problems = append(res.Problems, fmt.Errorf("EndpointSlice %s/%s: %w", es.Namespace, es.Name, err))
				continue
			}
			k := es.Namespace + "/" + es.Labels[discoveryv1.LabelServiceName]
			idx.slices[k] = append(idx.slices[k], es)
		case o.Pod != nil:
			if podRunning(o.Pod) {
				idx.pods[o.Pod.Namespace] = append(idx.pods[o.Pod.Namespace], o.Pod)
			}
		}
	}
	slices.SortStableFunc(idx.services, func(a, b *corev1.Service) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return idx
}

func podRunning(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return false
	}
	ip, err := netip.ParseAddr(p.Status.PodIP)
	return err == nil && ip.Is4()
}

// podReady: the Ready condition, when the pod has one; a pod that reports
// no conditions at all (published by a node at attach) is ready.
func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return true
}

func (idx *indexed) live(node string) bool {
	return node == "" || idx.in.LiveNode == nil || idx.in.LiveNode(node)
}

// frontends builds one spec per port of a checked Service and fills in
// the summary's ports and endpoint counts.
func (idx *indexed) frontends(svc *corev1.Service, vip netip.Addr, sum *Summary) []vswitch.ServiceSpec {
	key := svc.Namespace + "/" + svc.Name
	ess := idx.slices[key]
	useSelector := len(ess) == 0 && len(svc.Spec.Selector) > 0
	switch {
	case len(ess) > 0:
		sum.Source = "EndpointSlice"
	case useSelector:
		sum.Source = "selector"
	}
	var pods []*corev1.Pod
	if useSelector {
		pods = idx.selected(svc)
	}
	ready, total := map[netip.Addr]bool{}, map[netip.Addr]bool{}
	var specs []vswitch.ServiceSpec
	for _, p := range svc.Spec.Ports {
		proto := protocolOrTCP(p.Protocol)
		spec := vswitch.ServiceSpec{
			Name:      frontendName(svc, p),
			ClusterIP: vip,
			Port:      uint16(p.Port),
			Proto:     packet.IPProtoTCP,
		}
		if proto == corev1.ProtocolUDP {
			spec.Proto = packet.IPProtoUDP
		}
		if svc.Spec.Type == corev1.ServiceTypeNodePort || svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
			spec.NodePort = uint16(p.NodePort)
		}
		if svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP {
			t := int32(DefaultAffinityTimeout)
			if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
				t = *c.ClientIP.TimeoutSeconds
			}
			spec.AffinityTimeout = time.Duration(t) * time.Second
		}
		spec.InternalLocal = svc.Spec.InternalTrafficPolicy != nil && *svc.Spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal
		spec.ExternalLocal = svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal
		if useSelector {
			spec.Backends = idx.podBackends(pods, p, proto)
		} else {
			spec.Backends = idx.sliceBackends(ess, p, proto)
		}
		for _, b := range spec.Backends {
			total[b.Addr] = true
			if b.Ready {
				ready[b.Addr] = true
			}
		}
		sum.Ports = append(sum.Ports, p)
		specs = append(specs, spec)
	}
	sum.Ready, sum.Total = len(ready), len(total)
	return specs
}

// frontendName is "namespace/name:port-name", or ":port-number" when the
// port has no name.
func frontendName(svc *corev1.Service, p corev1.ServicePort) string {
	n := p.Name
	if n == "" {
		n = strconv.Itoa(int(p.Port))
	}
	return svc.Namespace + "/" + svc.Name + ":" + n
}

// selected returns the running pods of the Service's namespace whose
// labels match its selector (equality on every key, as the endpoints
// controller does).
func (idx *indexed) selected(svc *corev1.Service) []*corev1.Pod {
	var out []*corev1.Pod
	for _, p := range idx.pods[svc.Namespace] {
		match := true
		for k, v := range svc.Spec.Selector {
			if got, ok := p.Labels[k]; !ok || got != v {
				match = false
				break
			}
		}
		if match {
			out = append(out, p)
		}
	}
	return out
}

// podBackends resolves the port's targetPort on each pod.
func (idx *indexed) podBackends(pods []*corev1.Pod, p corev1.ServicePort, proto corev1.Protocol) []vswitch.ServiceBackend {
	set := backendSet{}
	for _, pod := range pods {
		port, ok := targetPortOn(pod, p, proto)
		if !ok {
			continue
		}
		ip, _ := netip.ParseAddr(pod.Status.PodIP)
		ready := podReady(pod) && idx.live(pod.Spec.NodeName)
		set.add(vswitch.ServiceBackend{
			Addr: ip, Port: port, Ready: ready, Serving: ready,
			Local: pod.Spec.NodeName != "" && pod.Spec.NodeName == idx.in.Node,
		})
	}
	return set.sorted()
}

// targetPortOn resolves a Service port's targetPort for one pod: a number
// as is (0: the Service port), a name through the pod's container ports of
// that name and protocol.
func targetPortOn(pod *corev1.Pod, p corev1.ServicePort, proto corev1.Protocol) (uint16, bool) {
	if p.TargetPort.Type == intstr.Int {
		if v := p.TargetPort.IntVal; v > 0 && v <= 65535 {
			return uint16(v), true
		}
		return uint16(p.Port), true
	}
	for _, c := range pod.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name == p.TargetPort.StrVal && protocolOrTCP(cp.Protocol) == proto && cp.ContainerPort > 0 && cp.ContainerPort <= 65535 {
				return uint16(cp.ContainerPort), true
			}
		}
	}
	return 0, false
}

// sliceBackends takes the endpoints of the Service's slices for one port:
// the slice port with the Service port's name and protocol.
func (idx *indexed) sliceBackends(ess []*discoveryv1.EndpointSlice, p corev1.ServicePort, proto corev1.Protocol) []vswitch.ServiceBackend {
	set := backendSet{}
	for _, es := range ess {
		var port uint16
		for _, sp := range es.Ports {
			name := ""
			if sp.Name != nil {
				name = *sp.Name
			}
			sproto := corev1.ProtocolTCP
			if sp.Protocol != nil {
				sproto = *sp.Protocol
			}
			if name == p.Name && sproto == proto {
				port = uint16(*sp.Port)
				break
			}
		}
		if port == 0 {
			continue
		}
		for _, ep := range es.Endpoints {
			// The API's meaning: nil ready or serving is "unknown", which
			// consumers take as true; nil terminating is false.
			ready := ep.Conditions.Ready == nil || *ep.Conditions.Ready
			serving := ep.Conditions.Serving == nil || *ep.Conditions.Serving
			terminating := ep.Conditions.Terminating != nil && *ep.Conditions.Terminating
			node := ""
			if ep.NodeName != nil {
				node = *ep.NodeName
			}
			if !idx.live(node) {
				ready, serving = false, false
			}
			ip, _ := netip.ParseAddr(ep.Addresses[0]) // the API: one address per IPv4 endpoint is used
			set.add(vswitch.ServiceBackend{
				Addr: ip, Port: port, Ready: ready && !terminating, Serving: serving, Terminating: terminating,
				Local: node != "" && node == idx.in.Node,
			})
		}
	}
	return set.sorted()
}

// backendSet merges backends met twice (two slices, two pods claiming one
// IP): the switch refuses duplicates. The merged one is ready if either
// is.
type backendSet map[backendKey]vswitch.ServiceBackend

type backendKey struct {
	addr netip.Addr
	port uint16
}

func (s backendSet) add(b vswitch.ServiceBackend) {
	k := backendKey{b.Addr, b.Port}
	if old, ok := s[k]; ok {
		b.Ready = b.Ready || old.Ready
		b.Serving = b.Serving || old.Serving
		b.Terminating = b.Terminating && old.Terminating
		b.Local = b.Local || old.Local
	}
	s[k] = b
}

func (s backendSet) sorted() []vswitch.ServiceBackend {
	out := make([]vswitch.ServiceBackend, 0, len(s))
	for _, b := range s {
		out = append(out, b)
	}
	slices.SortFunc(out, func(a, b vswitch.ServiceBackend) int {
		return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.Port, b.Port))
	})
	return out
}
