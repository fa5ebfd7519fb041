package overlay_test

import (
	"fmt"
	"net/netip"

	"github.com/weftnet/weft/overlay"
	"github.com/weftnet/weft/packet"
)

// A worker's receive side: decapsulate what the socket delivered and count
// per peer. bufs[i][offset:offset+sizes[i]] is what Conn.ReadBatch returns.
func ExampleDecapper_Decap() {
	var peers overlay.PeerTable
	err := peers.Set([]overlay.Peer{{
		Name:     "node-b",
		Underlay: netip.MustParseAddr("10.99.0.2"),
		Subnet:   netip.MustParsePrefix("10.244.2.0/24"),
		VNI:      1,
	}})
	if err != nil {
		panic(err)
	}
	dec := overlay.NewDecapper(1, &peers)

	// One received datagram: VXLAN header + a 60-byte inner frame.
	datagram := make([]byte, overlay.HeaderLen+60)
	overlay.PutHeader(datagram, 1)
	packet.PutEth(datagram[overlay.HeaderLen:], packet.BroadcastMAC, packet.MAC{2, 0, 0, 0, 2, 1}, packet.EtherTypeARP)
	from := netip.MustParseAddrPort("10.99.0.2:40001")

	inner, peer, reason := dec.Decap(datagram, from)
	if reason != overlay.DropNone {
		return // already counted in dec.Drops
	}
	peer.Stats().RxFrames.Add(1)
	peer.Stats().RxBytes.Add(uint64(len(inner)))
	fmt.Println(peer.Name, len(inner), dec.Drops.Snapshot()["unknown_peer"])

	_, _, reason = dec.Decap(datagram, netip.MustParseAddrPort("192.0.2.7:4789"))
	fmt.Println(reason, dec.Drops.Snapshot()["unknown_peer"])
	// Output:
	// node-b 60 0
	// unknown_peer 1
}
