package sim

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/policy/policytest"
)

// The suite's fail-closed cases that need the sim itself, not only
// policies: a pod attached into a policy that already isolates it, and a
// node's weftd restarted with a deny policy in force. Their results are
// policytest Results (expected and observed matrices) like every case's.

// PolicySimCase is one such case.
type PolicySimCase struct {
	Name string
	Run  func(e *PolicyEnv, ctx context.Context) ([]policytest.Result, error)
}

// PolicySimCases are the cases run after policytest.Cases on a suite
// NewPolicySuite set up.
func PolicySimCases() []PolicySimCase {
	return []PolicySimCase{
		{Name: "new-pod-into-deny", Run: (*PolicyEnv).newPodIntoDeny},
		{Name: "restart-with-deny", Run: (*PolicyEnv).restartWithDeny},
	}
}

// restartProbeTimeout bounds one probe while a node restarts: short, so
// the probes cover the restart densely.
const restartProbeTimeout = 100 * time.Millisecond

func selectPods(ns, name string, match map[string]string, types ...networkingv1.PolicyType) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: match}, PolicyTypes: types},
	}
}

var ingressOnly = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}

// newPodIntoDeny: a policy isolates pods labelled pod=new in x before any
// exists; then x/new is attached (its servers listening before the
// attach) and probed at once from every suite pod: each one's first
// attempt on every probe must be blocked, while x/a (not selected) stays
// reachable. Then a second policy allows x's own pods into x/new, and
// those must connect (so blocked was the policy, not a dead pod).
func (e *PolicyEnv) newPodIntoDeny(ctx context.Context) ([]policytest.Result, error) {
	const name = "new-pod-into-deny"
	if e.cluster == nil {
		return nil, fmt.Errorf("%s: needs a suite from NewPolicySuite", name)
	}
	m := e.Model
	nsX := m.Namespaces["x"]
	deny := selectPods(nsX, "pl-isolate-new", map[string]string{"pod": "new"}, ingressOnly...)
	if err := e.Apply([]*networkingv1.NetworkPolicy{deny}); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	newPod := &policytest.Pod{NSKey: "x", Namespace: nsX, Name: "new"}
	node := e.cluster.Nodes[1%len(e.cluster.Nodes)]
	var ports []api.ContainerPort
	for _, pr := range policytest.Probes {
		ports = append(ports, api.ContainerPort{Name: policytest.PortName(pr), Port: uint16(pr.Port), Protocol: string(pr.Protocol)})
	}
	sp, err := e.cluster.addPod(ctx, node, nsX, newPod.Name, api.PodMeta{Labels: map[string]string{"pod": "new"}, ContainerPorts: ports}, e.serve)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	newPod.IP = sp.IP()
	e.pods[newPod] = sp

	// First attempts, all at once: nothing here waits for the new pod to
	// be published through the registry, so the other nodes do not know
	// it yet and only its own node's snapshot can stop the packets.
	to := []*policytest.Pod{m.Pod("x", "a"), newPod}
	var out []policytest.Result
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, pr := range policytest.Probes {
		r := policytest.NewReachabilityFromTo(m.Pods, to)
		r.IgnoreLoopback = true
		r.ExpectAllIngress(newPod, false)
		for _, f := range m.Pods {
			for _, t := range to {
				if f == t {
					continue
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					ok := e.Probe(f, t, pr)
					mu.Lock()
					r.Observe(f, t, ok)
					mu.Unlock()
				}()
			}
		}
		out = append(out, policytest.Result{Case: name, Step: "attached-first-packet", Probe: pr, Reach: r})
	}
	wg.Wait()
	// Those drops are the policy's, on the new pod's node (weft counters).
	if err := policyDropsCounted(ctx, node, nsX+"/"+deny.Name); err != nil {
		return out, fmt.Errorf("%s: %w", name, err)
	}

	allow := selectPods(nsX, "pl-allow-x-to-new", map[string]string{"pod": "new"}, ingressOnly...)
	allow.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{}}}}}
	if err := e.Apply([]*networkingv1.NetworkPolicy{deny, allow}); err != nil {
		return out, fmt.Errorf("%s: %w", name, err)
	}
	for _, pr := range policytest.Probes {
		r := policytest.NewReachabilityFromTo(m.Pods, to)
		r.IgnoreLoopback = true
		r.ExpectAllIngress(newPod, false)
		r.ExpectPeer(policytest.Peer{NS: "x"}, policytest.Peer{NS: "x", Pod: "new"}, true)
		policytest.Observe(r, e, pr, 16)
		out = append(out, policytest.Result{Case: name, Step: "allowed-from-x", Probe: pr, Reach: r})
	}
	return out, nil
}

// restartWithDeny: y/b admits only y/a. While the weftd of y/b's node is
// stopped and started again, every other suite pod (two of them on that
// node, so nothing but that node decides) probes y/b over and over with
// short timeouts: one connection is an open window and fails the case.
// After the restart, y/a connects again, the others stay blocked, and x/b
// (on the same node, no policy) is reachable from everyone.
func (e *PolicyEnv) restartWithDeny(ctx context.Context) ([]policytest.Result, error) {
	const name = "restart-with-deny"
	if e.cluster == nil {
		return nil, fmt.Errorf("%s: needs a suite from NewPolicySuite", name)
	}
	m := e.Model
	target := m.Pod("y", "b")
	allowed := m.Pod("y", "a")
	pol := selectPods(m.Namespaces["y"], "pl-only-a-to-b", map[string]string{"pod": "b"}, ingressOnly...)
	pol.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
		{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"pod": "a"}}}}}}
	pols := []*networkingv1.NetworkPolicy{pol}
	if err := e.Apply(pols); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	node, ok := e.cluster.Node(e.pods[target].Node)
	if !ok {
		return nil, fmt.Errorf("%s: no node %s", name, e.pods[target].Node)
	}
	var denied []*policytest.Pod
	for _, p := range m.Pods {
		if p != target && p != allowed {
			denied = append(denied, p)
		}
	}
	during := []policytest.Probe{policytest.Probes[0], policytest.Probes[2]} // TCP 80, UDP 80
	reach := make([]*policytest.Reachability, len(during))
	attempts := make([]atomic.Int64, len(during))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i, pr := range during {
		reach[i] = policytest.NewReachabilityFromTo(denied, []*policytest.Pod{target})
		reach[i].ExpectAllIngress(target, false)
		for _, f := range denied {
			reach[i].Observe(f, target, false)
			wg.Add(1)
			go func() {
				defer wg.Done()
				e.probeUntil(ctx, f, target, pr, stop, func(connected bool) {
					attempts[i].Add(1)
					if connected {
						mu.Lock()
						reach[i].Observe(f, target, true)
						mu.Unlock()
					}
				})
			}()
		}
	}
	time.Sleep(5 * restartProbeTimeout) // probing before the stop, too
	rerr := e.cluster.Restart(ctx, node)
	if rerr == nil {
		time.Sleep(5 * restartProbeTimeout) // and after the start
	}
	close(stop)
	wg.Wait()
	var out []policytest.Result
	for i, pr := range during {
		step := fmt.Sprintf("during-restart-of-%s (%d probes)", node.Name, attempts[i].Load())
		out = append(out, policytest.Result{Case: name, Step: step, Probe: pr, Reach: reach[i]})
	}
	if rerr != nil {
		return out, fmt.Errorf("%s: restart %s: %w", name, node.Name, rerr)
	}
	// Every node enforces the policy again (the restarted one has read the
	// object store) before the matrix after the restart.
	if err := e.Apply(pols); err != nil {
		return out, fmt.Errorf("%s: after restart: %w", name, err)
	}
	to := []*policytest.Pod{target, m.Pod("x", "b")}
	for _, pr := range policytest.Probes {
		r := policytest.NewReachabilityFromTo(m.Pods, to)
		r.IgnoreLoopback = true
		r.ExpectAllIngress(target, false)
		r.Expect(allowed, target, true)
		policytest.Observe(r, e, pr, 16)
		out = append(out, policytest.Result{Case: name, Step: "after-restart", Probe: pr, Reach: r})
	}
	return out, nil
}

// probeUntil probes from -> to with restartProbeTimeout until stop is
// closed (at most 1,000 times), reporting each outcome.
func (e *PolicyEnv) probeUntil(ctx context.Context, from, to *policytest.Pod, pr policytest.Probe, stop <-chan struct{}, seen func(bool)) {
	src, dst := e.pods[from], e.pods[to]
	addr := dst.Address.Addr()
	for range 1000 {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		default:
		}
		ap := netip.AddrPortFrom(addr, uint16(pr.Port))
		start := time.Now()
		var ok bool
		if pr.Protocol == "UDP" {
			ok = ProbeUDP(ctx, src.Netns, ap, restartProbeTimeout)
		} else {
			ok = ProbeTCP(ctx, src.Netns, ap, restartProbeTimeout)
		}
		seen(ok)
		// A probe refused at once (no route while the node is down) must
		// not spin: keep to about one attempt per timeout.
		if d := time.Since(start); d < restartProbeTimeout/3 {
			time.Sleep(restartProbeTimeout/3 - d)
		}
	}
}

// policyDropsCounted checks that node n's `weft counters` show ingress
// drops under policy (namespace/name).
func policyDropsCounted(ctx context.Context, n *Node, policy string) error {
	cl := api.NewClient(n.Socket)
	defer cl.Close()
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	counters, err := cl.Counters(qctx)
	if err != nil {
		return fmt.Errorf("node %s: counters: %w", n.Name, err)
	}
	key := "policy.ingress_drops." + policy
	if counters[key] == 0 || counters["drop.policy_ingress"] == 0 {
		return fmt.Errorf("node %s: denied probes but %s = %d, drop.policy_ingress = %d", n.Name, key, counters[key], counters["drop.policy_ingress"])
	}
	return nil
}
