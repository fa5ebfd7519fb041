package service

import (
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"

	"github.com/weftnet/weft/objects"
)

// The node port range, kube-apiserver's --service-node-port-range default.
const (
	NodePortMin = 30000
	NodePortMax = 32767
)

// hasNodePorts reports whether a Service's ports are exposed on the nodes.
func hasNodePorts(svc *corev1.Service) bool {
	return svc.Spec.Type == corev1.ServiceTypeNodePort || svc.Spec.Type == corev1.ServiceTypeLoadBalancer
}

// nodePortKey is one claim on a node port: the number, and the protocol
// (one Service may use one number for its TCP and its UDP port, as the API
// server allows; two Services may not share a number at all).
type nodePortKey struct {
	port  int32
	proto corev1.Protocol
}

// assignNodePorts checks and allocates the node ports of the Services of an
// apply, as the API server does: a nodePort given must lie in the range and
// not be another Service's; a NodePort Service port without one keeps the
// one it had, or gets the lowest free number; a Service of another type may
// not name one; externalTrafficPolicy is Cluster or Local. It returns the
// objects with their node ports filled in and one error per problem.
func assignNodePorts(stored, incoming []objects.Object) ([]objects.Object, []error) {
	replacing := map[string]bool{}
	for _, o := range incoming {
		replacing[o.Key()] = true
	}
	taken := map[int32]string{} // node port -> the Service holding it
	prev := map[string]map[nodePortKey]int32{}
	for _, o := range stored {
		if o.Service == nil || !hasNodePorts(o.Service) {
			continue
		}
		for _, p := range o.Service.Spec.Ports {
			if p.NodePort == 0 {
				continue
			}
			if replacing[o.Key()] {
				if prev[o.Key()] == nil {
					prev[o.Key()] = map[nodePortKey]int32{}
				}
				prev[o.Key()][nodePortKey{p.Port, protocolOrTCP(p.Protocol)}] = p.NodePort
				continue
			}
			taken[p.NodePort] = o.String()
		}
	}
	var errs []error
	out := make([]objects.Object, len(incoming))
	copy(out, incoming)
	// Ports that name their node port first, so an allocation cannot take
	// a number a later document of the same apply asks for.
	for pass := range 2 {
		for i, o := range out {
			svc := o.Service
			if svc == nil || svc.Spec.Type == corev1.ServiceTypeExternalName {
				continue
			}
			if pass == 0 {
				if err := checkNodePortType(svc); err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", o, err))
					continue
				}
			}
			if !hasNodePorts(svc) {
				continue
			}
			svc = svc.DeepCopy()
			mine := map[int32]bool{}          // numbers this Service holds (TCP and UDP may share one)
			claimed := map[nodePortKey]bool{} // ... but not one protocol twice
			for j := range svc.Spec.Ports {
				p := &svc.Spec.Ports[j]
				want := p.NodePort
				if want == 0 {
					want = prev[o.Key()][nodePortKey{p.Port, protocolOrTCP(p.Protocol)}]
				}
				if (want != 0) != (pass == 0) {
					if want != 0 {
						mine[want] = true
					}
					continue
				}
				at := fmt.Sprintf("spec.ports[%d]", j)
				switch {
				case want != 0 && (want < NodePortMin || want > NodePortMax):
					errs = append(errs, fmt.Errorf("%s: %s.nodePort %d: outside the node port range %d-%d", o, at, want, NodePortMin, NodePortMax))
					continue
				case want != 0 && taken[want] != "" && taken[want] != o.String():
					errs = append(errs, fmt.Errorf("%s: %s.nodePort %d: already allocated to %s", o, at, want, taken[want]))
					continue
				case want != 0 && claimed[nodePortKey{want, protocolOrTCP(p.Protocol)}]:
					errs = append(errs, fmt.Errorf("%s: %s.nodePort %d: given twice for %s", o, at, want, protocolOrTCP(p.Protocol)))
					continue
				case want == 0:
					n, err := allocateNodePort(taken, mine)
					if err != nil {
						errs = append(errs, fmt.Errorf("%s: %s: %w", o, at, err))
						continue
					}
					want = n
				}
				p.NodePort = want
				taken[want] = o.String()
				mine[want] = true
				claimed[nodePortKey{want, protocolOrTCP(p.Protocol)}] = true
			}
			out[i] = objects.Object{Kind: o.Kind, Service: svc}
		}
	}
	return out, errs
}

// checkNodePortType refuses node ports on a Service not exposed on the
// nodes, and an externalTrafficPolicy weft does not know.
func checkNodePortType(svc *corev1.Service) error {
	var errs []error
	if !hasNodePorts(svc) {
		for j, p := range svc.Spec.Ports {
			if p.NodePort != 0 {
				errs = append(errs, fmt.Errorf("spec.ports[%d].nodePort %d: a Service of type %s has no node ports (type NodePort has)", j, p.NodePort, typeOrClusterIP(svc.Spec.Type)))
			}
		}
	}
	switch svc.Spec.ExternalTrafficPolicy {
	case "", corev1.ServiceExternalTrafficPolicyCluster, corev1.ServiceExternalTrafficPolicyLocal:
	default:
		errs = append(errs, fmt.Errorf("spec.externalTrafficPolicy %q: want Cluster or Local", svc.Spec.ExternalTrafficPolicy))
	}
	return errors.Join(errs...)
}

func typeOrClusterIP(t corev1.ServiceType) corev1.ServiceType {
	if t == "" {
		return corev1.ServiceTypeClusterIP
	}
	return t
}

// allocateNodePort picks the lowest free node port (the API server picks
// at random; the lowest keeps allocation reproducible, as for cluster IPs).
func allocateNodePort(taken map[int32]string, mine map[int32]bool) (int32, error) {
	for n := int32(NodePortMin); n <= NodePortMax; n++ {
		if taken[n] == "" && !mine[n] {
			return n, nil
		}
	}
	return 0, fmt.Errorf("every node port %d-%d is allocated", NodePortMin, NodePortMax)
}
