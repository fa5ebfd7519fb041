package service

import (
	"errors"
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Defaults, as the API server and kube-proxy use them.
var (
	// DefaultServiceCIDR is the service CIDR when none is configured
	// (kube-apiserver's --service-cluster-ip-range default).
	DefaultServiceCIDR = netip.MustParsePrefix("10.96.0.0/12")
)

const (
	// DefaultAffinityTimeout is sessionAffinityConfig.clientIP.timeoutSeconds
	// when unset: 3 hours.
	DefaultAffinityTimeout = 10800
	// maxAffinityTimeout is the API's upper bound (one day).
	maxAffinityTimeout = 86400
	// LabelServiceProxyName marks a Service another proxy implements;
	// kube-proxy (and weft) leave it alone.
	LabelServiceProxyName = "service.kubernetes.io/service-proxy-name"
	// maxEndpointsPerSlice is the API's bound.
	maxEndpointsPerSlice = 1000
)

// CIDRs are the networks a Service's addresses must lie in.
type CIDRs struct {
	Service netip.Prefix // cluster IPs; never an endpoint
	Cluster netip.Prefix // pod IPs
}

// skipReason says why a Service gets no frontends though it is valid, or
// "" when it gets them.
func skipReason(svc *corev1.Service) string {
	switch {
	case svc.Spec.Type == corev1.ServiceTypeExternalName:
		return "ExternalName"
	case svc.Spec.ClusterIP == corev1.ClusterIPNone:
		return "headless"
	case svc.Labels[LabelServiceProxyName] != "":
		return "service-proxy-name " + svc.Labels[LabelServiceProxyName]
	}
	return ""
}

// clusterIP parses the Service's cluster IP and checks it against the
// service CIDR. "" (not yet allocated) is an error here: CheckApply
// allocates before it checks.
func clusterIP(svc *corev1.Service, cidrs CIDRs) (netip.Addr, error) {
	s := svc.Spec.ClusterIP
	ip, err := netip.ParseAddr(s)
	switch {
	case s == "":
		return ip, errors.New("spec.clusterIP: none allocated")
	case err != nil:
		return ip, fmt.Errorf("spec.clusterIP %q: not an IP address", s)
	case !ip.Is4():
		return ip, fmt.Errorf("spec.clusterIP %s: not IPv4 (weft serves IPv4 Services)", ip)
	case !cidrs.Service.Contains(ip):
		return ip, fmt.Errorf("spec.clusterIP %s: outside the service CIDR %s", ip, cidrs.Service)
	case ip == cidrs.Service.Masked().Addr() || ip == lastAddr(cidrs.Service):
		return ip, fmt.Errorf("spec.clusterIP %s: the network or broadcast address of the service CIDR %s", ip, cidrs.Service)
	}
	if len(svc.Spec.ClusterIPs) > 1 || len(svc.Spec.ClusterIPs) == 1 && svc.Spec.ClusterIPs[0] != s {
		return ip, fmt.Errorf("spec.clusterIPs %v: weft serves single-stack IPv4, want [%s]", svc.Spec.ClusterIPs, s)
	}
	return ip, nil
}

// checkService checks what weft needs of a Service that is not skipped:
// cluster IP, ports, affinity. It does not look at other Services.
func checkService(svc *corev1.Service, cidrs CIDRs) error {
	var errs []error
	if _, err := clusterIP(svc, cidrs); err != nil {
		errs = append(errs, err)
	}
	if len(svc.Spec.Ports) == 0 {
		errs = append(errs, errors.New("spec.ports: a ClusterIP Service needs at least one port"))
	}
	type pk struct {
		port  int32
		proto corev1.Protocol
	}
	seenPort := map[pk]bool{}
	seenName := map[string]bool{}
	for i, p := range svc.Spec.Ports {
		at := fmt.Sprintf("spec.ports[%d]", i)
		if p.Name != "" {
			at = fmt.Sprintf("spec.ports[%d] (%s)", i, p.Name)
		}
		if err := checkProtocol(p.Protocol); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", at, err))
		}
		if p.Port < 1 || p.Port > 65535 {
			errs = append(errs, fmt.Errorf("%s: port %d is out of range 1..65535", at, p.Port))
		}
		if err := checkTargetPort(p.TargetPort); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", at, err))
		}
		if len(svc.Spec.Ports) > 1 && p.Name == "" {
			errs = append(errs, fmt.Errorf("%s: a Service with several ports must name each", at))
		}
		if p.Name != "" && seenName[p.Name] {
			errs = append(errs, fmt.Errorf("%s: name %q used twice", at, p.Name))
		}
		k := pk{p.Port, protocolOrTCP(p.Protocol)}
		if seenPort[k] {
			errs = append(errs, fmt.Errorf("%s: port %d/%s given twice", at, p.Port, k.proto))
		}
		seenName[p.Name], seenPort[k] = true, true
	}
	switch svc.Spec.SessionAffinity {
	case "", corev1.ServiceAffinityNone:
	case corev1.ServiceAffinityClientIP:
		if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
			if t := *c.ClientIP.TimeoutSeconds; t < 1 || t > maxAffinityTimeout {
				errs = append(errs, fmt.Errorf("spec.sessionAffinityConfig.clientIP.timeoutSeconds %d: out of range 1..%d", t, maxAffinityTimeout))
			}
		}
	default:
		errs = append(errs, fmt.Errorf("spec.sessionAffinity %q: want None or ClientIP", svc.Spec.SessionAffinity))
	}
	if p := svc.Spec.InternalTrafficPolicy; p != nil && *p != corev1.ServiceInternalTrafficPolicyCluster && *p != corev1.ServiceInternalTrafficPolicyLocal {
		errs = append(errs, fmt.Errorf("spec.internalTrafficPolicy %q: want Cluster or Local", *p))
	}
	return errors.Join(errs...)
}

func protocolOrTCP(p corev1.Protocol) corev1.Protocol {
	if p == "" {
		return corev1.ProtocolTCP
	}
	return p
}

func checkProtocol(p corev1.Protocol) error {
	switch p {
	case "", corev1.ProtocolTCP, corev1.ProtocolUDP:
		return nil
	case corev1.ProtocolSCTP:
		return errors.New("protocol SCTP: weft serves TCP and UDP only")
	}
	return fmt.Errorf("protocol %q: want TCP or UDP", p)
}

// checkTargetPort accepts a number 0..65535 (0: the port itself) or an
// IANA service name (at most 15 lowercase letters, digits and '-').
func checkTargetPort(tp intstr.IntOrString) error {
	if tp.Type == intstr.Int {
		if tp.IntVal < 0 || tp.IntVal > 65535 {
			return fmt.Errorf("targetPort %d is out of range 1..65535", tp.IntVal)
		}
		return nil
	}
	s := tp.StrVal
	if s == "" || len(s) > 15 {
		return fmt.Errorf("targetPort %q: a port name has 1..15 characters", s)
	}
	letter := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z':
			letter = true
		case c >= '0' && c <= '9', c == '-':
		default:
			return fmt.Errorf("targetPort %q: a port name has lowercase letters, digits and '-' only", s)
		}
	}
	if !letter {
		return fmt.Errorf("targetPort %q: a port name needs a letter", s)
	}
	return nil
}

// endpointAddrProblem says why ip cannot be a Service endpoint, or "".
//
// Endpoints outside the cluster CIDR are served: in a Kubernetes cluster
// the `kubernetes` Service's endpoints are the API servers' host addresses,
// and a Service in front of hostNetwork pods has node addresses, so every
// operator and CoreDNS in a pod need them (kube-proxy serves them alike).
// After the service stage's DNAT such a packet takes the pod's egress
// route to the node's own stack (weft0), which routes it and masquerades
// it, and the reply comes back through weft0 to be reverse-translated.
// What cannot work is refused, as the API server's validation of Endpoints
// refuses it (ValidateNonSpecialIP): unspecified, loopback, link-local,
// multicast and broadcast addresses; and an address in the service CIDR,
// which the stage would translate again, a loop.
func endpointAddrProblem(ip netip.Addr, cidrs CIDRs) string {
	switch {
	case ip.IsUnspecified(), ip.IsLoopback(), ip.IsLinkLocalUnicast(), ip.IsMulticast(),
		ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "is not a unicast address a Service can send to (unspecified, loopback, link-local, multicast or broadcast)"
	case cidrs.Service.IsValid() && cidrs.Service.Contains(ip):
		return fmt.Sprintf("is inside the service CIDR %s: a cluster IP cannot be an endpoint", cidrs.Service)
	}
	return ""
}

// checkSlice checks an EndpointSlice: IPv4, owned by a Service (the
// kubernetes.io/service-name label), endpoint addresses a Service can send
// to (endpointAddrProblem), ports TCP or UDP in range.
func checkSlice(es *discoveryv1.EndpointSlice, cidrs CIDRs) error {
	var errs []error
	if es.AddressType != discoveryv1.AddressTypeIPv4 {
		errs = append(errs, fmt.Errorf("addressType %q: weft serves IPv4 endpoints only", es.AddressType))
	}
	if es.Labels[discoveryv1.LabelServiceName] == "" {
		errs = append(errs, fmt.Errorf("metadata.labels: no %s label naming the Service it serves", discoveryv1.LabelServiceName))
	}
	if len(es.Endpoints) > maxEndpointsPerSlice {
		errs = append(errs, fmt.Errorf("endpoints: %d, more than %d", len(es.Endpoints), maxEndpointsPerSlice))
	}
	for i, ep := range es.Endpoints {
		if len(ep.Addresses) == 0 {
			errs = append(errs, fmt.Errorf("endpoints[%d]: no address", i))
		}
		for _, a := range ep.Addresses {
			ip, err := netip.ParseAddr(a)
			switch {
			case err != nil || !ip.Is4():
				errs = append(errs, fmt.Errorf("endpoints[%d]: address %q is not an IPv4 address", i, a))
			default:
				if why := endpointAddrProblem(ip, cidrs); why != "" {
					errs = append(errs, fmt.Errorf("endpoints[%d]: address %s %s", i, ip, why))
				}
			}
		}
	}
	names := map[string]bool{}
	for i, p := range es.Ports {
		name := ""
		if p.Name != nil {
			name = *p.Name
		}
		at := fmt.Sprintf("ports[%d] (%q)", i, name)
		if names[name] {
			errs = append(errs, fmt.Errorf("%s: name given twice", at))
		}
		names[name] = true
		if p.Protocol != nil {
			if err := checkProtocol(*p.Protocol); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", at, err))
			}
		}
		if p.Port == nil {
			errs = append(errs, fmt.Errorf("%s: no port number (weft does not serve all-ports endpoints)", at))
		} else if *p.Port < 1 || *p.Port > 65535 {
			errs = append(errs, fmt.Errorf("%s: port %d is out of range 1..65535", at, *p.Port))
		}
	}
	return errors.Join(errs...)
}

// lastAddr is the last (broadcast) address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
