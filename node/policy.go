package node

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/objects"
	"github.com/weftnet/weft/policy"
)

// NetworkPolicy: the node compiles the Namespaces, Pods and
// NetworkPolicies of the object store, plus its own pods as their port
// records describe them, into a policy snapshot and hands it to the
// switch's policy stage (switch/policy.go). Its own pods come from the
// records, not from the store, so a pod is in the snapshot (isolated, if
// a policy selects it) before its port comes up, without waiting for the
// publish round trip through the registry.
//
// Fail closed: with an object store, the switch starts with a not-ready
// snapshot that denies all IPv4 until the store has been read once, so a
// restarted weftd never forwards what its policies would deny. Without an
// object store no policy can exist and the stage is off.

// policyState is the node's policy control plane. Its mutex is taken
// after ctlMu (attach, detach) and after the object view's (compile), and
// never takes another lock.
type policyState struct {
	eng  *policy.Engine
	host netip.Addr

	mu     sync.Mutex
	synced bool                  // objs holds the store's content
	objs   []objects.Object      // the object view, as last compiled
	local  map[string]policy.Pod // this node's pods by PodID/ifname
	warned map[string]bool
}

// startPolicy installs the not-ready snapshot; call before any port is up.
func (n *Node) startPolicy(host netip.Addr) {
	if n.cfg.Objects == nil {
		return
	}
	n.pol = &policyState{eng: policy.NewEngine(), host: host, local: map[string]policy.Pod{}, warned: map[string]bool{}}
	n.sw.SetPolicy(n.pol.eng.Load())
	n.log.Info("policy: all pod traffic denied until the object store is read")
}

// policySetObjects recompiles with the object store's content.
func (n *Node) policySetObjects(objs []objects.Object) {
	if n.pol == nil {
		return
	}
	n.pol.mu.Lock()
	defer n.pol.mu.Unlock()
	first := !n.pol.synced
	n.pol.objs, n.pol.synced = objs, true
	n.compilePolicyLocked()
	if first {
		n.log.Info("policy: object store read, policies in force", "policies", len(n.pol.eng.Load().Policies()))
	}
}

// policyLocalPod adds (or, with remove, takes out) one of this node's pods
// and recompiles; attach calls it before the port is up.
func (n *Node) policyLocalPod(r PortRecord, remove bool) {
	if n.pol == nil {
		return
	}
	key := r.PodID + "/" + r.IfName
	n.pol.mu.Lock()
	defer n.pol.mu.Unlock()
	if remove {
		delete(n.pol.local, key)
	} else if r.PodNamespace != "" && r.PodName != "" {
		// A pod without a Kubernetes name is in no namespace: no policy
		// selects it, and as a peer it is an address like any other.
		p := policy.Pod{Namespace: r.PodNamespace, Name: r.PodName, Labels: r.Labels, IP: r.Addr.Addr()}
		for _, cp := range r.ContainerPorts {
			p.Ports = append(p.Ports, policy.NamedPort{Name: cp.Name, Protocol: corev1.Protocol(cp.Protocol), Port: int32(cp.Port)})
		}
		n.pol.local[key] = p
	}
	if n.pol.synced {
		n.compilePolicyLocked()
	}
}

func (n *Node) compilePolicyLocked() {
	s := n.pol
	in, err := policy.InputFromObjects(s.objs, []netip.Addr{s.host})
	if err != nil {
		n.warnPolicyOnce(err)
	}
	// This node's pods as attached win over what the store says of them,
	// but for the labels and named ports an attach did not give (weft-cni
	// has none: the kubelet passes only the pod's name): those are the
	// stored Pod's, or the pod would be in no policy's selection. With the
	// API server as the store (KubePods) the stored Pod's always win: its
	// labels change while the pod runs (kubectl label), and what an attach
	// said is then stale; other nodes already judge the pod by the Pod.
	stored := map[[2]string]policy.Pod{}
	for _, p := range in.Pods {
		stored[[2]string{p.Namespace, p.Name}] = p
	}
	mine := map[[2]string]bool{}
	for _, p := range s.local {
		mine[[2]string{p.Namespace, p.Name}] = true
	}
	pods := in.Pods[:0]
	for _, p := range in.Pods {
		if !mine[[2]string{p.Namespace, p.Name}] {
			pods = append(pods, p)
		}
	}
	for _, p := range s.local {
		if st, ok := stored[[2]string{p.Namespace, p.Name}]; ok {
			if len(p.Labels) == 0 || n.cfg.KubePods {
				p.Labels = st.Labels
			}
			if len(p.Ports) == 0 || n.cfg.KubePods {
				p.Ports = st.Ports
			}
		}
		pods = append(pods, p)
	}
	in.Pods = pods
	snap := s.eng.Update(in)
	for _, p := range snap.Problems() {
		n.warnPolicyOnce(p)
	}
	n.sw.SetPolicy(snap)
}

func (n *Node) warnPolicyOnce(err error) {
	if msg := err.Error(); !n.pol.warned[msg] {
		n.pol.warned[msg] = true
		n.log.Warn("policy: enforcing fail-closed or skipping", "err", err)
	}
}

// Policies implements api.PolicyService.
func (n *Node) Policies(ctx context.Context) (api.PolicyList, error) {
	if n.pol == nil {
		return api.PolicyList{}, fmt.Errorf("registry %s has no object store, so no NetworkPolicies: %w", n.cfg.RegistryBackend, api.ErrNotImplemented)
	}
	n.pol.mu.Lock()
	byKey := make(map[string]*networkingv1.NetworkPolicy)
	for _, o := range n.pol.objs {
		if o.NetworkPolicy != nil {
			byKey[o.NetworkPolicy.Namespace+"/"+o.NetworkPolicy.Name] = o.NetworkPolicy
		}
	}
	synced := n.pol.synced
	n.pol.mu.Unlock()
	snap := n.pol.eng.Load()
	out := api.PolicyList{Ready: synced, Generation: snap.Generation(), Policies: []api.PolicyInfo{}}
	for _, p := range snap.Policies() {
		var dirs []string
		if p.Ingress {
			dirs = append(dirs, "Ingress")
		}
		if p.Egress {
			dirs = append(dirs, "Egress")
		}
		info := api.PolicyInfo{Namespace: p.Namespace, Name: p.Name, Isolates: strings.Join(dirs, ","),
			IngressRules: p.IngressRules, EgressRules: p.EgressRules, Selects: p.Selects, Problem: p.Problem}
		if info.Selects == nil {
			info.Selects = []string{}
		}
		if np := byKey[p.Namespace+"/"+p.Name]; np != nil {
			info.Fingerprint = policy.Fingerprint(np)
		}
		out.Policies = append(out.Policies, info)
	}
	return out, nil
}

// policyCounters adds every policy's drops to `weft counters`, as
// policy.ingress_drops.<namespace>/<name> and policy.egress_drops.<...>.
func (n *Node) policyCounters(c api.Counters) {
	if n.pol == nil {
		return
	}
	for _, d := range n.pol.eng.DropCounts() {
		c["policy.ingress_drops."+d.Policy] = d.Ingress
		c["policy.egress_drops."+d.Policy] = d.Egress
	}
}

// policyMetrics fills the per-policy drops of a metrics snapshot.
func (n *Node) policyMetrics(s *api.Snapshot) {
	if n.pol == nil {
		return
	}
	for _, d := range n.pol.eng.DropCounts() {
		s.PolicyDrops = append(s.PolicyDrops, api.PolicyDrops{Policy: d.Policy, Ingress: d.Ingress, Egress: d.Egress})
	}
}
