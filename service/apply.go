package service

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/weftnet/weft/objects"
)

// ErrInvalid marks an object weft refuses to store; errors.Is works on
// what CheckApply returns.
var ErrInvalid = errors.New("invalid object")

// CheckApply checks the Services and EndpointSlices of an apply against
// each other and against the objects already stored, and returns the
// objects as they should be stored: a Service without a cluster IP gets
// one allocated from the service CIDR (AllocateClusterIP), and the
// defaults the API server fills in (protocol TCP, targetPort = port) are
// written out. If any object is refused, the error names every problem and
// nothing should be stored. Other kinds pass unchanged.
func CheckApply(stored, incoming []objects.Object, cidrs CIDRs) ([]objects.Object, error) {
	incoming = slices.Clone(incoming)
	// Cluster IPs taken by stored Services other than the ones being
	// replaced; a replaced Service keeps its IP unless it names another.
	taken := map[netip.Addr]string{}
	replacing := map[string]objects.Object{}
	for _, o := range incoming {
		replacing[o.Key()] = o
	}
	prevIP := map[string]string{}
	for _, o := range stored {
		if o.Service == nil {
			continue
		}
		prevIP[o.Key()] = o.Service.Spec.ClusterIP
		if _, ok := replacing[o.Key()]; ok {
			continue
		}
		if ip, err := netip.ParseAddr(o.Service.Spec.ClusterIP); err == nil {
			taken[ip] = o.String()
		}
	}
	out := make([]objects.Object, 0, len(incoming))
	var errs []error
	// Services naming their IP (or keeping the one they have) first, so an allocation cannot take an IP
	// a later document of the same apply asks for.
	for pass := range 2 {
		for i, o := range incoming {
			asks := o.Service != nil && (o.Service.Spec.ClusterIP != "" || prevIP[o.Key()] != "")
			if o.Service == nil || asks != (pass == 0) {
				continue
			}
			svc, err := prepareService(o, prevIP[o.Key()], taken, cidrs)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", o, err))
				continue
			}
			incoming[i] = svc
		}
	}
	incoming, npErrs := assignNodePorts(stored, incoming)
	errs = append(errs, npErrs...)
	for _, o := range incoming {
		if o.EndpointSlice != nil {
			if err := checkSlice(o.EndpointSlice, cidrs); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", o, err))
			}
		}
		out = append(out, o)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, errors.Join(errs...))
	}
	return out, nil
}

// prepareService defaults, allocates and checks one Service of an apply,
// and marks its cluster IP taken.
func prepareService(o objects.Object, prev string, taken map[netip.Addr]string, cidrs CIDRs) (objects.Object, error) {
	svc := o.Service.DeepCopy()
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return objects.Object{Kind: o.Kind, Service: svc}, nil
	}
	for i := range svc.Spec.Ports {
		p := &svc.Spec.Ports[i]
		if p.Protocol == "" {
			p.Protocol = corev1.ProtocolTCP
		}
		if p.TargetPort.Type == intstr.Int && p.TargetPort.IntVal == 0 {
			p.TargetPort = intstr.FromInt32(p.Port)
		}
	}
	if svc.Spec.ClusterIP == "" {
		// Re-applying a Service without clusterIP keeps the one it has,
		// as the API server does.
		if prev != "" {
			svc.Spec.ClusterIP = prev
		} else {
			ip, err := AllocateClusterIP(cidrs.Service, taken)
			if err != nil {
				return o, err
			}
			svc.Spec.ClusterIP = ip.String()
		}
	}
	if svc.Spec.ClusterIP == corev1.ClusterIPNone {
		return objects.Object{Kind: o.Kind, Service: svc}, nil
	}
	if err := checkService(svc, cidrs); err != nil {
		return o, err
	}
	ip, _ := netip.ParseAddr(svc.Spec.ClusterIP)
	if other, ok := taken[ip]; ok {
		return o, fmt.Errorf("spec.clusterIP %s: already taken by %s", ip, other)
	}
	taken[ip] = o.String()
	if len(svc.Spec.ClusterIPs) == 0 {
		svc.Spec.ClusterIPs = []string{svc.Spec.ClusterIP}
	}
	return objects.Object{Kind: o.Kind, Service: svc}, nil
}

// AllocateClusterIP picks a free cluster IP as the API server does: from
// the upper band of the service CIDR, leaving the lower band (the first
// min(max(16, size/16), 256) addresses) to Services that ask for a
// specific IP (KEP-3070). Unlike the API server it picks the lowest free
// address rather than a random one, so allocation is reproducible.
func AllocateClusterIP(cidr netip.Prefix, taken map[netip.Addr]string) (netip.Addr, error) {
	if !cidr.Addr().Is4() || cidr.Bits() > 30 {
		return netip.Addr{}, fmt.Errorf("service CIDR %s: want an IPv4 network of at least 4 addresses", cidr)
	}
	size := uint32(1) << (32 - cidr.Bits())
	band := min(max(16, size/16), 256)
	base := cidr.Masked().Addr()
	try := func(from, to uint32) (netip.Addr, bool) {
		for i := from; i < to; i++ {
			a := addAddr(base, i)
			if _, used := taken[a]; !used {
				return a, true
			}
		}
		return netip.Addr{}, false
	}
	// Network (0) and broadcast (size-1) are never handed out.
	if a, ok := try(band, size-1); ok {
		return a, nil
	}
	if a, ok := try(1, min(band, size-1)); ok {
		return a, nil
	}
	return netip.Addr{}, fmt.Errorf("service CIDR %s: every cluster IP is taken", cidr)
}

func addAddr(a netip.Addr, n uint32) netip.Addr {
	b := a.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) + n
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
