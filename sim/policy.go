package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"strings"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/objects"
	"github.com/weftnet/weft/policy"
	"github.com/weftnet/weft/policy/policytest"
)

// The NetworkPolicy suite in the sim: nine sim pods play policytest's
// x/a ... z/c (spread over the nodes so that most pairs cross nodes), each
// runs servers on TCP 80, 81 and UDP 80, 81, and a probe is a real TCP
// connect or UDP echo from one pod's namespace to another's address.

// PolicyProbeTimeout bounds one probe: a denied flow costs this long.
const PolicyProbeTimeout = 1500 * time.Millisecond

// PolicyEnv runs policytest cases against a sim cluster.
type PolicyEnv struct {
	Model *policytest.Model
	pods  map[*policytest.Pod]*Pod
	// ApplyPolicies makes its argument the complete set of policies in
	// force and returns when every node enforces it.
	ApplyPolicies func(ctx context.Context, pols []*networkingv1.NetworkPolicy) error
	ctx           context.Context
	servers       []io.Closer
	cluster       *Cluster // set by NewPolicySuite: what PolicySimCases need
}

// NewPolicyEnv maps the model's nine pods onto pods (at least nine; pod
// i plays model pod i, so spread them over nodes), fills in their
// addresses and starts the probe servers in their namespaces. Close stops
// the servers.
func NewPolicyEnv(ctx context.Context, pods []*Pod, nsPrefix string) (*PolicyEnv, error) {
	m := policytest.NewModel(nsPrefix)
	if len(pods) < len(m.Pods) {
		return nil, fmt.Errorf("sim: the policy suite needs %d pods, the cluster has %d", len(m.Pods), len(pods))
	}
	e := &PolicyEnv{Model: m, pods: map[*policytest.Pod]*Pod{}, ctx: ctx}
	for i, mp := range m.Pods {
		e.pods[mp] = pods[i]
		mp.IP = pods[i].IP()
		if err := e.serve(pods[i]); err != nil {
			e.Close()
			return nil, err
		}
	}
	return e, nil
}

// SimPod is the sim pod playing model pod p.
func (e *PolicyEnv) SimPod(p *policytest.Pod) *Pod { return e.pods[p] }

func (e *PolicyEnv) serve(p *Pod) error {
	for _, pr := range policytest.Probes {
		addr := fmt.Sprintf(":%d", pr.Port)
		if pr.Protocol == "UDP" {
			pc, err := ListenPacketIn(p.Netns, "udp4", addr)
			if err != nil {
				return fmt.Errorf("pod %s: udp server %s: %w", p.Name, addr, err)
			}
			e.servers = append(e.servers, pc)
			go echoPackets(pc)
			continue
		}
		ln, err := ListenIn(p.Netns, "tcp4", addr)
		if err != nil {
			return fmt.Errorf("pod %s: tcp server %s: %w", p.Name, addr, err)
		}
		e.servers = append(e.servers, ln)
		go acceptAndClose(ln)
	}
	return nil
}

func acceptAndClose(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

func echoPackets(pc net.PacketConn) {
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		pc.WriteTo(buf[:n], from)
	}
}

// Close stops the probe servers.
func (e *PolicyEnv) Close() error {
	var errs []error
	for _, s := range e.servers {
		errs = append(errs, s.Close())
	}
	e.servers = nil
	return errors.Join(errs...)
}

// Apply implements policytest.Env.
func (e *PolicyEnv) Apply(pols []*networkingv1.NetworkPolicy) error {
	if e.ApplyPolicies == nil {
		if len(pols) == 0 {
			return nil
		}
		return errors.New("sim: no way to apply NetworkPolicies configured (the policy stage is not integrated yet)")
	}
	return e.ApplyPolicies(e.ctx, pols)
}

// Probe implements policytest.Env: a TCP connect, or a UDP echo (three
// tries, as a datagram may be lost), within PolicyProbeTimeout.
func (e *PolicyEnv) Probe(from, to *policytest.Pod, pr policytest.Probe) bool {
	src, dst := e.pods[from], e.pods[to]
	addr := netip.AddrPortFrom(dst.IP(), uint16(pr.Port))
	if pr.Protocol == "UDP" {
		return ProbeUDP(e.ctx, src.Netns, addr, PolicyProbeTimeout)
	}
	return ProbeTCP(e.ctx, src.Netns, addr, PolicyProbeTimeout)
}

// ProbeTCP reports whether a TCP connection from namespace netns to dst
// opens within timeout.
func ProbeTCP(ctx context.Context, netns string, dst netip.AddrPort, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := DialIn(ctx, netns, "tcp4", dst.String())
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// ProbeUDP reports whether a datagram from namespace netns to dst comes
// back (the server echoes) within timeout, sending up to three times.
func ProbeUDP(ctx context.Context, netns string, dst netip.AddrPort, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := DialIn(ctx, netns, "udp4", dst.String())
	if err != nil {
		return false
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	msg := []byte("weft-policy-probe")
	buf := make([]byte, 64)
	for try := range 3 {
		conn.SetDeadline(time.Now().Add(timeout / 3))
		if try == 2 {
			conn.SetDeadline(deadline)
		}
		if _, err := conn.Write(msg); err != nil {
			return false // e.g. ICMP port unreachable from an earlier try
		}
		n, err := conn.Read(buf)
		if err == nil && string(buf[:n]) == string(msg) {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
	}
	return false
}

// NewPolicySuite adds the suite's nine pods to c (model pod i on node
// i%len(c.Nodes), attached in the model's namespaces with labels pod=<name>
// and a named port per probe server), applies the Namespace objects, waits
// until every node knows every pod, and returns an env whose Apply stores
// the policies through the registry and waits until every node enforces
// exactly them (by content fingerprint).
func NewPolicySuite(ctx context.Context, c *Cluster, nsPrefix string) (*PolicyEnv, error) {
	m := policytest.NewModel(nsPrefix)
	var ports []api.ContainerPort
	for _, pr := range policytest.Probes {
		ports = append(ports, api.ContainerPort{Name: policytest.PortName(pr), Port: uint16(pr.Port), Protocol: string(pr.Protocol)})
	}
	var pods []*Pod
	for i, mp := range m.Pods {
		p, err := c.AddPodMeta(ctx, c.Nodes[i%len(c.Nodes)], mp.Namespace, mp.Name, api.PodMeta{Labels: mp.Labels(), ContainerPorts: ports})
		if err != nil {
			return nil, err
		}
		pods = append(pods, p)
	}
	var docs []string
	for _, ns := range m.NamespaceObjects() {
		b, err := objects.Encode(objects.Object{Kind: objects.KindNamespace, Namespace: ns})
		if err != nil {
			return nil, err
		}
		docs = append(docs, string(b))
	}
	if _, err := c.Apply(ctx, strings.Join(docs, "---\n")); err != nil {
		return nil, fmt.Errorf("sim: apply the suite's namespaces: %w", err)
	}
	env, err := NewPolicyEnv(ctx, pods, nsPrefix)
	if err != nil {
		return nil, err
	}
	env.cluster = c
	applied := map[string]string{} // ns/name -> document, in force
	env.ApplyPolicies = func(ctx context.Context, pols []*networkingv1.NetworkPolicy) error {
		return c.applyPolicies(ctx, pols, applied, nil)
	}
	// Every node must know every pod (published through the registry)
	// before a case runs: a policy selecting a namespace's pods, allowing
	// all egress (it isolates nothing that matters), shows it.
	var sentinels []*networkingv1.NetworkPolicy
	for _, k := range policytest.NamespaceKeys {
		sentinels = append(sentinels, &networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: m.Namespaces[k], Name: "pl-sentinel"},
			Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
				Egress: []networkingv1.NetworkPolicyEgressRule{{}}},
		})
	}
	if err := c.applyPolicies(ctx, sentinels, applied, func(p api.PolicyInfo) bool { return len(p.Selects) == len(policytest.PodNames) }); err != nil {
		env.Close()
		return nil, fmt.Errorf("sim: waiting for every node to know the suite's pods: %w", err)
	}
	if err := env.Apply(nil); err != nil {
		env.Close()
		return nil, err
	}
	return env, nil
}

// applyPolicies makes pols the NetworkPolicies in force (deleting the ones
// of applied not among them) and waits until every running node enforces
// exactly them, and each satisfies ok if given.
func (c *Cluster) applyPolicies(ctx context.Context, pols []*networkingv1.NetworkPolicy, applied map[string]string, ok func(api.PolicyInfo) bool) error {
	want := map[string]string{} // ns/name -> fingerprint
	var docs []string
	next := map[string]string{}
	for _, np := range pols {
		b, err := objects.Encode(objects.Object{Kind: objects.KindNetworkPolicy, NetworkPolicy: np})
		if err != nil {
			return err
		}
		// What the registry stores is the decoded document: fingerprint that.
		o, err := objects.DecodeOne(b)
		if err != nil {
			return fmt.Errorf("policy %s/%s: %w", np.Namespace, np.Name, err)
		}
		key := np.Namespace + "/" + np.Name
		want[key] = policy.Fingerprint(o.NetworkPolicy)
		next[key] = string(b)
		docs = append(docs, string(b))
	}
	var gone []string
	for key, doc := range applied {
		if _, keep := next[key]; !keep {
			gone = append(gone, doc)
		}
	}
	if len(gone) > 0 {
		if _, err := c.DeleteObjects(ctx, strings.Join(gone, "---\n")); err != nil {
			return fmt.Errorf("sim: delete policies: %w", err)
		}
	}
	if len(docs) > 0 && c.Registry == RegistryKube {
		// The API server defaults what the documents leave out and adds
		// its metadata: weftd fingerprints what it stored.
		applied, err := c.kubeApply(ctx, strings.Join(docs, "---\n"))
		if err != nil {
			return fmt.Errorf("sim: apply policies: %w", err)
		}
		for _, a := range applied {
			if np, ok := a.stored.(*networkingv1.NetworkPolicy); ok {
				want[np.Namespace+"/"+np.Name] = policy.Fingerprint(kubePolicyFingerprintObject(np))
			}
		}
	} else if len(docs) > 0 {
		if _, err := c.Apply(ctx, strings.Join(docs, "---\n")); err != nil {
			return fmt.Errorf("sim: apply policies: %w", err)
		}
	}
	clear(applied)
	maps.Copy(applied, next)
	deadline := time.Now().Add(30 * time.Second)
	for {
		lag := c.policyLag(ctx, want, ok)
		if lag == "" {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("sim: policies not in force after 30s: %s", lag)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// policyLag says which node does not yet enforce want ("" when all do).
func (c *Cluster) policyLag(ctx context.Context, want map[string]string, ok func(api.PolicyInfo) bool) string {
	for _, n := range c.Nodes {
		if !pidAlive(n.PID) {
			continue
		}
		cl := api.NewClient(n.Socket)
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		list, err := cl.Policies(qctx)
		cancel()
		cl.Close()
		switch {
		case err != nil:
			return fmt.Sprintf("node %s: %v", n.Name, err)
		case !list.Ready:
			return fmt.Sprintf("node %s: not ready", n.Name)
		case len(list.Policies) != len(want):
			return fmt.Sprintf("node %s: %d policies, want %d", n.Name, len(list.Policies), len(want))
		}
		for _, p := range list.Policies {
			fp, known := want[p.Namespace+"/"+p.Name]
			if !known || fp != p.Fingerprint {
				return fmt.Sprintf("node %s: policy %s/%s fingerprint %s, want %s", n.Name, p.Namespace, p.Name, p.Fingerprint, fp)
			}
			if ok != nil && !ok(p) {
				return fmt.Sprintf("node %s: policy %s/%s selects %v", n.Name, p.Namespace, p.Name, p.Selects)
			}
		}
	}
	return ""
}
