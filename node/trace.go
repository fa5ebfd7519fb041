package node

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/ipam"
	"github.com/weftnet/weft/packet"
	vswitch "github.com/weftnet/weft/switch"
)

// Trace runs a described packet (or a given frame) through the live
// pipeline dry and reports each stage's decision, like ovs-appctl
// ofproto/trace: nothing is learned, counted or sent.
func (n *Node) Trace(ctx context.Context, req api.TraceRequest) (api.TraceResponse, error) {
	if err := req.Normalize(); err != nil {
		return api.TraceResponse{}, err
	}
	in, ok := n.traceIngress(req.In)
	if !ok {
		return api.TraceResponse{}, fmt.Errorf("%w: no port %q (give a pod ID, a pod IP, %q or \"overlay\")", api.ErrNotFound, req.In, n.cfg.HostPortName)
	}
	frame := req.Frame
	if len(frame) == 0 {
		var err error
		if frame, err = n.traceFrame(in, req); err != nil {
			return api.TraceResponse{}, err
		}
	}
	v, steps := n.sw.Trace(frame, in.id, n.now())
	resp := api.TraceResponse{Steps: make([]api.TraceStep, 0, len(steps)+1)}
	resp.Steps = append(resp.Steps, api.TraceStep{Stage: "input", Decision: fmt.Sprintf("port %d (%s), %d-byte frame", in.id, n.portName(in.id), len(frame))})
	for _, s := range steps {
		resp.Steps = append(resp.Steps, api.TraceStep{Stage: s.Stage, Decision: s.Decision})
	}
	switch v.Action {
	case vswitch.ActionDeliver:
		resp.Verdict = fmt.Sprintf("deliver port %d (%s)", v.Port, n.portName(v.Port))
	case vswitch.ActionFlood:
		ids := n.sw.FloodSet(in.id, nil)
		names := make([]string, len(ids))
		for i, id := range ids {
			names[i] = n.portName(id)
		}
		resp.Verdict = fmt.Sprintf("flood to %d ports %v", len(ids), names)
	case vswitch.ActionEncap:
		peer := v.Peer.String()
		if p, ok := n.peers.Lookup(v.Peer.As4()); ok {
			peer = p.Name + " (" + peer + ")"
		}
		resp.Steps = append(resp.Steps, api.TraceStep{Stage: "overlay",
			Decision: fmt.Sprintf("vxlan vni %d to %s udp/%d from %s", n.cfg.VNI, peer, n.cfg.Port, n.underlay.Addr)})
		resp.Verdict = "encap " + peer
	default:
		resp.Verdict = "drop " + v.Reason.String()
	}
	if v.Reply {
		// The frame itself went no further: the router consumed it and
		// the verdict above is where its answer (ARP, ICMP) goes.
		if v.Reason != vswitch.DropNone {
			resp.Verdict = "drop " + v.Reason.String() + "; router answers: " + resp.Verdict
		} else {
			resp.Verdict = "answered by the router: " + resp.Verdict
		}
	}
	return resp, nil
}

// tracePort is the ingress of a trace: a port, or the overlay.
type tracePort struct {
	id   vswitch.PortID
	mac  packet.MAC
	addr [4]byte
}

func (n *Node) traceIngress(name string) (tracePort, bool) {
	if name == "overlay" {
		return tracePort{id: overlayPortID}, true
	}
	p, ok := n.portByName(name)
	if !ok {
		return tracePort{}, false
	}
	return tracePort{id: p.ID, mac: p.mac, addr: p.addr.Addr().As4()}, true
}

// traceFrame builds the frame a pod would send: to the neighbour's MAC when
// the destination is on the local subnet, else (the gateway included, whose
// ARP the router answers with its own MAC) to the router MAC.
func (n *Node) traceFrame(in tracePort, req api.TraceRequest) ([]byte, error) {
	src := in.addr
	if req.Src.IsValid() {
		src = req.Src.As4()
	} else if in.id == overlayPortID {
		// The overlay has no address of its own: 0.0.0.0 would be traced
		// as a martian while real VXLAN from a peer is forwarded.
		return nil, api.BadRequest("src", "required when tracing from the overlay (a remote pod's address)")
	}
	srcMAC := in.mac
	dstMAC := n.routerMAC
	if in.id == overlayPortID {
		srcMAC = packet.MAC{0x02, 0, 0, 0, 0, 1} // a peer's router MAC stands in
	} else if n.lease.Subnet.Contains(req.Dst) && req.Dst != ipam.Gateway(n.lease.Subnet) {
		dstMAC = packet.BroadcastMAC // unknown neighbour: what the pod's ARP would find
		for _, nb := range n.sw.Neighbours() {
			if nb.IP == req.Dst {
				dstMAC = nb.MAC
			}
		}
	}
	var l4 []byte
	var proto uint8
	switch req.Proto {
	case api.ProtoTCP:
		proto, l4 = packet.IPProtoTCP, make([]byte, packet.TCPMinHdrLen)
		binary.BigEndian.PutUint16(l4[0:], max(req.SPort, 40000))
		binary.BigEndian.PutUint16(l4[2:], req.DPort)
		l4[12] = 5 << 4
		l4[13] = packet.TCPFlagSYN
	case api.ProtoUDP:
		proto, l4 = packet.IPProtoUDP, make([]byte, packet.UDPHdrLen)
		packet.PutUDP(l4, max(req.SPort, 40000), req.DPort, packet.UDPHdrLen)
	default:
		proto, l4 = packet.IPProtoICMP, make([]byte, packet.ICMPHdrLen)
		l4[0] = packet.ICMPEchoRequest
	}
	total := packet.IPv4MinHdrLen + len(l4)
	if req.Size > total {
		l4 = append(l4, make([]byte, req.Size-total)...)
		total = req.Size
	}
	if proto == packet.IPProtoUDP {
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
	}
	f := make([]byte, packet.EthHdrLen+total, packet.EthHdrLen+total+256)
	packet.PutEth(f, dstMAC, srcMAC, packet.EtherTypeIPv4)
	packet.PutIPv4(f[packet.EthHdrLen:], uint16(total), 1, true, req.TTL, proto, src, req.Dst.As4())
	copy(f[packet.EthHdrLen+packet.IPv4MinHdrLen:], l4)
	if proto == packet.IPProtoICMP {
		// The router answers only echo requests whose checksum is right,
		// as a real pod's are.
		packet.SetICMPChecksum(f[packet.EthHdrLen+packet.IPv4MinHdrLen:])
	}
	return f, nil
}
