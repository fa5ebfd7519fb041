package datapath

import (
	"sync/atomic"

	"github.com/weftnet/weft/netdev"
	"github.com/weftnet/weft/overlay"
	vswitch "github.com/weftnet/weft/switch"
)

// Reason is why a frame or datagram was not forwarded, in one space for
// every stage: the switch's reasons first (as they are, so a reason the
// switch adds appears here without a change), then the decapsulator's
// ("vxlan_"), the devices' ("tap_"), then the data path's own. The zero
// Reason is "none".
type Reason uint16

// The ranges of the space.
const (
	switchBase Reason = 0
	decapBase  Reason = switchBase + Reason(vswitch.NumDropReasons)
	deviceBase Reason = decapBase + Reason(overlay.NumDropReasons)
	ownBase    Reason = deviceBase + Reason(netdev.NumDropReasons)
)

// The data path's own reasons.
const (
	// DropPortGone: the verdict named a port detached meanwhile.
	DropPortGone Reason = ownBase + iota
	// DropTapWrite: the output device failed the write (pod link gone).
	DropTapWrite
	// DropUDPSend: sendmmsg refused a datagram (EMSGSIZE, unreachable).
	DropUDPSend
	// DropNoHeadroom: no room in front of a frame for the VXLAN header.
	DropNoHeadroom
	// DropBadGSO: a super-frame whose headers do not allow segmenting it
	// (malformed, MSS too small).
	DropBadGSO
	// DropGSOType: a GSO type the data path does not handle.
	DropGSOType
	// DropBadCsum: NEEDS_CSUM offsets outside the frame.
	DropBadCsum
	// DropUnderlayTruncated: a datagram (or GRO run) larger than the read
	// buffer.
	DropUnderlayTruncated
	// DropUnderlayEmpty: a zero-length datagram on the VXLAN port.
	DropUnderlayEmpty
	// DropBadPartial: a datagram marked overlay.FlagPartialCsum whose
	// inner frame is not TCP or UDP over IPv4 with its header inside.
	DropBadPartial
	// NumReasons sizes arrays indexed by Reason; not a reason.
	NumReasons
)

var ownNames = [NumReasons - ownBase]string{
	DropPortGone - ownBase:          "out_port_gone",
	DropTapWrite - ownBase:          "out_tap_write",
	DropUDPSend - ownBase:           "out_udp_send",
	DropNoHeadroom - ownBase:        "out_no_headroom",
	DropBadGSO - ownBase:            "offload_bad_gso",
	DropGSOType - ownBase:           "offload_gso_type",
	DropBadCsum - ownBase:           "offload_bad_csum",
	DropUnderlayTruncated - ownBase: "underlay_truncated",
	DropUnderlayEmpty - ownBase:     "underlay_empty",
	DropBadPartial - ownBase:        "offload_bad_partial",
}

// SwitchReason, DecapReason and DeviceReason place another package's
// reason in the space.
func SwitchReason(r vswitch.DropReason) Reason { return switchBase + Reason(r) }
func DecapReason(r overlay.DropReason) Reason  { return decapBase + Reason(r) }
func DeviceReason(r netdev.DropReason) Reason  { return deviceBase + Reason(r) }

// String is the reason's metric label: the switch's names as they are,
// "vxlan_" and "tap_" before the decapsulator's and the devices'.
func (r Reason) String() string {
	switch {
	case r < decapBase:
		return vswitch.DropReason(r - switchBase).String()
	case r < deviceBase:
		return "vxlan_" + overlay.DropReason(r-decapBase).String()
	case r < ownBase:
		return "tap_" + netdev.DropReason(r-deviceBase).String()
	case r < NumReasons:
		return ownNames[r-ownBase]
	}
	return "unknown"
}

// isNone reports the "none" reason of each range, which counts nothing.
func (r Reason) isNone() bool {
	return r == SwitchReason(vswitch.DropNone) || r == DecapReason(overlay.DropNone)
}

// Drops counts the data path's own reasons (the switch, the decapsulator
// and the devices count theirs; Snapshot brings them together). Drops are
// rare, so workers share the counters.
type Drops struct {
	own [NumReasons - ownBase]atomic.Uint64
}

// Add counts n drops for one of the data path's own reasons.
func (d *Drops) Add(r Reason, n uint64) {
	if r >= ownBase && r < NumReasons {
		d.own[r-ownBase].Add(n)
	}
}

// Get is the count of one of the data path's own reasons.
func (d *Drops) Get(r Reason) uint64 {
	if r >= ownBase && r < NumReasons {
		return d.own[r-ownBase].Load()
	}
	return 0
}

// DropCounts is every reason with its count, zero or not, keyed by
// Reason.String: the switch's, the decapsulator's, the devices' (live
// ports and those detached since start) and the data path's. It allocates;
// call it from the API and metrics paths.
func (dp *Datapath) DropCounts() map[string]uint64 {
	m := make(map[string]uint64, int(NumReasons))
	sc := dp.sw.Counters()
	dev := dp.deviceDrops()
	for r := Reason(0); r < NumReasons; r++ {
		if r.isNone() {
			continue
		}
		var v uint64
		switch {
		case r < decapBase:
			v = sc.Drops[r-switchBase]
		case r < deviceBase:
			v = dp.decap.Drops.Get(overlay.DropReason(r - decapBase))
		case r < ownBase:
			v = dev[r-deviceBase]
		default:
			v = dp.drops.Get(r)
		}
		m[r.String()] = v
	}
	return m
}

// deviceDrops sums the devices' drops: live ports' queues and the
// ports detached since start.
func (dp *Datapath) deviceDrops() [netdev.NumDropReasons]uint64 {
	var sum [netdev.NumDropReasons]uint64
	for r := range sum {
		sum[r] = dp.retired[r].Load()
	}
	for i := range dp.ports {
		if p := dp.ports[i].Load(); p != nil {
			p.addDeviceDrops(&sum)
		}
	}
	return sum
}
