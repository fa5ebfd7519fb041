package vswitch_test

import (
	"fmt"
	"net/netip"

	"github.com/weftnet/weft/packet"
	vswitch "github.com/weftnet/weft/switch"
)

// A node's worker: one batch from a pod's TAP, one verdict per frame.
func ExampleSwitch_Process() {
	sw, err := vswitch.New(vswitch.Config{
		RouterMAC: packet.MAC{0x02, 0xaa, 0, 0, 0, 1},
		Subnet:    netip.MustParsePrefix("10.244.1.0/24"),
	})
	if err != nil {
		panic(err)
	}
	podMAC := packet.MAC{0x02, 0, 0, 0, 1, 3}
	_ = sw.AddPort(vswitch.PortConfig{ID: 1, Kind: vswitch.PortHost, MAC: packet.MAC{0x02, 0, 0, 0, 1, 2}, IPv4: netip.MustParseAddr("10.244.1.2")})
	_ = sw.AddPort(vswitch.PortConfig{ID: 3, Kind: vswitch.PortPod, MAC: podMAC, IPv4: netip.MustParseAddr("10.244.1.3")})
	_ = sw.AddPort(vswitch.PortConfig{ID: 100, Kind: vswitch.PortOverlay})
	_ = sw.SetRoutes([]vswitch.Route{{
		Prefix: netip.MustParsePrefix("10.244.2.0/24"), Kind: vswitch.RoutePeer,
		Peer: netip.MustParseAddr("192.168.0.2"), PeerMAC: packet.MAC{0x02, 0xaa, 0, 0, 0, 2},
	}})

	// The pod ARPs for its gateway. Buffers are fixed and reused; the
	// switch writes answers into them.
	buf := make([]byte, 2048)
	packet.PutEth(buf, packet.BroadcastMAC, podMAC, packet.EtherTypeARP)
	packet.PutARP(buf[14:], packet.ARPOpRequest, podMAC, [4]byte{10, 244, 1, 3}, packet.MAC{}, [4]byte{10, 244, 1, 1})
	frames := [][]byte{buf[:42]}
	verdicts := make([]vswitch.Verdict, len(frames))
	flood := make([]vswitch.PortID, 0, 64)

	sw.Process(frames, 3, verdicts, 1e9)

	for i, v := range verdicts {
		switch v.Action {
		case vswitch.ActionDeliver:
			fmt.Printf("write %d bytes to port %d (reply %v)\n", len(frames[i]), v.Port, v.Reply)
		case vswitch.ActionFlood:
			for _, p := range sw.FloodSet(v.Port, flood[:0]) {
				fmt.Println("write to port", p)
			}
		case vswitch.ActionEncap:
			fmt.Println("VXLAN to", v.Peer)
		case vswitch.ActionDrop:
			fmt.Println("drop:", v.Reason)
		}
	}
	// Output:
	// write 42 bytes to port 3 (reply true)
}
