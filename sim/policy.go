package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	networkingv1 "k8s.io/api/networking/v1"

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
