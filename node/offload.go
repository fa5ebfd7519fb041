package node

import (
	"time"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/netdev"
	"github.com/weftnet/weft/overlay"
	"github.com/weftnet/weft/packet"
	"github.com/weftnet/weft/registry"
)

// Which kernel offloads the node asks for (Config.Offload, the master
// switch, and one knob per feature). With all of them a pod's TCP stream
// reaches weft as 64 KiB super-frames (TSO) that datapath splits for the
// peer, the split segments leave in one UDP_SEGMENT message (GSO), and the
// peer's socket hands them back as one buffer (GRO) that its datapath
// coalesces into one super-frame write to the pod.

// tso, uso, udpGSO and gro say whether each offload is on.
func (n *Node) tso() bool    { return n.cfg.Offload && !n.cfg.DisableTSO }
func (n *Node) uso() bool    { return n.cfg.Offload && !n.cfg.DisableTSO && !n.cfg.DisableUSO }
func (n *Node) udpGSO() bool { return n.cfg.Offload && !n.cfg.DisableUSO }
func (n *Node) gro() bool    { return n.cfg.Offload && !n.cfg.DisableGRO }

// partialCsum says whether checksums pods leave partial stay partial
// (datapath/partial.go): it needs virtio-header TAPs, so Offload. A node
// without it neither sends nor advertises partial checksums; what arrives
// flagged anyway is still handled (written partial or completed).
func (n *Node) partialCsum() bool { return n.cfg.Offload && n.cfg.PartialCsum }

// rxSpin is datapath.Config.RxSpin: only the GRO readers spin, so only
// under Offload with GRO.
func (n *Node) rxSpin() time.Duration {
	if !n.gro() {
		return 0
	}
	return n.cfg.RxSpin
}

// caps are the capabilities the node advertises in its lease.
func (n *Node) caps() registry.Caps {
	if n.partialCsum() {
		return registry.CapPartialCsum
	}
	return 0
}

// offloadTapConfig asks for a virtio-header TAP with checksum offload, TSO
// and USO as the knobs allow (USO needs Linux 6.2; the ladder steps down)
// when the node runs with Offload. USO is only asked for with TSO: the
// kernel's offload ladder has no USO-without-TSO rung.
func (n *Node) offloadTapConfig(cfg *netdev.TapConfig) {
	if !n.cfg.Offload {
		return
	}
	cfg.VnetHdr = true
	switch {
	case n.uso():
		cfg.MaxOffload = netdev.OffloadAll
	case n.tso():
		cfg.MaxOffload = netdev.OffloadTSO
	default:
		cfg.MaxOffload = netdev.OffloadCSUM
	}
	if n.tso() {
		cfg.BatchSize = datapath.SuperReadBatch
	}
	cfg.GSOMaxSegs = gsoMaxSegs(cfg.MTU)
	cfg.Queues = n.cfg.TapQueues
}

// gsoMaxSegs is how many segments a pod's TSO super-frame may hold so that
// they leave as one UDP GSO message: each becomes a datagram of MTU + 22
// bytes (VXLAN and inner Ethernet headers), and one message carries at most
// MaxGSOBytes in at most MaxGSOSegments datagrams. The kernel's default (a
// 64 KiB super-frame, 46 segments at MTU 1450) needs two messages, and the
// peer then gets two GRO reads and writes two runs to the pod.
func gsoMaxSegs(mtu int) int {
	if mtu <= 0 {
		mtu = 1500
	}
	return max(1, min(overlay.MaxGSOSegments, overlay.MaxGSOBytes/(mtu+overlay.HeaderLen+packet.EthHdrLen)))
}

// offloadStatus says what the node's offload path does, for `weft status`:
// e.g. "tap=csum|tso4|tso6 udp=gso,gro csum=partial", or "off".
func (n *Node) offloadStatus() string {
	if !n.cfg.Offload {
		return "off"
	}
	s := "tap=none"
	if p := n.ports[hostPortID].Load(); p != nil && p.Dev.VnetHdr() {
		s = "tap=" + netdev.OffloadString(p.Dev.Offloads())
	}
	switch {
	case n.gsoOK && n.groOK:
		s += " udp=gso,gro"
	case n.groOK:
		s += " udp=gro"
	case n.gsoOK:
		s += " udp=gso"
	default:
		s += " udp=none"
	}
	if n.partialCsum() {
		s += " csum=partial"
	}
	return s
}

// offloadCounts is the offload work by kind; nil when off.
func (n *Node) offloadCounts() map[string]uint64 {
	if !n.cfg.Offload {
		return nil
	}
	w := n.dp.Work()
	m := map[string]uint64{
		"tso_frames":         w.SuperFrames.Load(),
		"segments":           w.Segments.Load(),
		"coalesced_runs":     w.Runs.Load(),
		"coalesced_segments": w.Coalesced.Load(),
		"drained_frames":     w.Drained.Load(),
		"partial_csum_tx":    w.PartialTx.Load(),
		"partial_csum_rx":    w.PartialRx.Load(),
	}
	if n.rxSpin() > 0 {
		var spins uint64
		for _, g := range n.gros {
			spins += g.Spins.Load()
		}
		m["rx_spins"] = spins
	}
	if n.cfg.ZeroCopy {
		m["zerocopy_sent"] = n.zc.Sent.Load()
		m["zerocopy_copied"] = n.zc.Copied.Load()
		m["zerocopy_gave_up"] = n.zc.GaveUp.Load()
	}
	return m
}
