//go:build linux

package overlay

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/testenv"
	"github.com/weftnet/weft/packet"
)

// TestConnNetnsKernelVXLANPeer checks the wire format against the Linux
// kernel's own VXLAN device, the peer weft must interoperate with:
//
//	netns A: kernel vxlan (VNI 42, 10.244.9.1/24, default FDB entry -> 10.99.0.2) over veth 10.99.0.1
//	netns B: our VTEP, 10.244.9.2 / 02:00:00:00:09:02, Conn on 10.99.0.2:4789
//
// We send the kernel an encapsulated ARP request, once through Conn with
// Encap and once as a full outer frame (built by gopacket) on an AF_PACKET
// socket; the kernel must decapsulate it and send its ARP reply back
// through its tunnel, which Decap must accept, read from Conn and as the UDP
// payload of the frame captured on the veth.
func TestConnNetnsKernelVXLANPeer(t *testing.T) {
	testenv.RequireRoot(t)
	const vni = 42
	u := newUnderlayPair(t)
	kernelMAC := packet.MAC{0x02, 0, 0, 0, 0x09, 0x01}
	ourMAC := packet.MAC{0x02, 0, 0, 0, 0x09, 0x02}
	kernelIP, ourIP := [4]byte{10, 244, 9, 1}, [4]byte{10, 244, 9, 2}

	hA, err := netlink.NewHandleAt(u.nsA)
	if err != nil {
		t.Fatal(err)
	}
	defer hA.Close()
	vethA, err := hA.LinkByName(u.linkA)
	if err != nil {
		t.Fatal(err)
	}
	vx := &netlink.Vxlan{
		LinkAttrs: netlink.LinkAttrs{Name: u.linkA[:len(u.linkA)-1] + "v", HardwareAddr: net.HardwareAddr(kernelMAC[:])},
		VxlanId:   vni, VtepDevIndex: vethA.Attrs().Index, SrcAddr: u.addrA.AsSlice(), Port: DefaultPort,
	}
	if err := hA.LinkAdd(vx); err != nil {
		t.Fatalf("add kernel vxlan: %v", err)
	}
	vxl, err := hA.LinkByName(vx.Name)
	if err != nil {
		t.Fatal(err)
	}
	if err := hA.NeighAppend(&netlink.Neigh{LinkIndex: vxl.Attrs().Index, Family: unix.AF_BRIDGE,
		State: netlink.NUD_PERMANENT, Flags: netlink.NTF_SELF, IP: u.addrB.AsSlice(), HardwareAddr: make(net.HardwareAddr, 6)}); err != nil {
		t.Fatalf("default FDB entry: %v", err)
	}
	if err := hA.AddrAdd(vxl, &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(kernelIP[:]), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}
	if err := hA.LinkSetUp(vxl); err != nil {
		t.Fatal(err)
	}

	conn := listen(t, u.nsB, ConnConfig{Addr: netip.AddrPortFrom(u.addrB, DefaultPort)})
	var peers PeerTable
	if err := peers.Set([]Peer{{Name: "kernel", Underlay: u.addrA, RouterMAC: kernelMAC, Subnet: netip.MustParsePrefix("10.244.9.0/24"), VNI: vni}}); err != nil {
		t.Fatal(err)
	}
	dec := NewDecapper(vni, &peers)

	// AF_PACKET socket on our veth end, for the full-frame variant.
	hB, err := netlink.NewHandleAt(u.nsB)
	if err != nil {
		t.Fatal(err)
	}
	defer hB.Close()
	vethB, err := hB.LinkByName(u.linkB)
	if err != nil {
		t.Fatal(err)
	}
	var psock int
	if err := inNetns(u.nsB, func() error {
		var err error
		psock, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		if err := unix.SetsockoptTimeval(psock, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 200000}); err != nil {
			return err
		}
		return unix.Bind(psock, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: vethB.Attrs().Index})
	}); err != nil {
		t.Fatalf("AF_PACKET socket: %v", err)
	}
	t.Cleanup(func() { unix.Close(psock) })

	arpRequest := func() []byte {
		buf := gopacket.NewSerializeBuffer()
		err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true},
			&layers.Ethernet{SrcMAC: net.HardwareAddr(ourMAC[:]), DstMAC: layers.EthernetBroadcast, EthernetType: layers.EthernetTypeARP},
			&layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
				Operation: layers.ARPRequest, SourceHwAddress: ourMAC[:], SourceProtAddress: ourIP[:],
				DstHwAddress: make([]byte, 6), DstProtAddress: kernelIP[:]})
		if err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	isARPReplyToUs := func(inner []byte) bool {
		return len(inner) >= 42 && packet.EthType(inner) == packet.EtherTypeARP &&
			binary.BigEndian.Uint16(inner[20:22]) == 2 && bytes.Equal(inner[22:28], kernelMAC[:]) &&
			bytes.Equal(inner[38:42], ourIP[:])
	}

	t.Run("socket form", func(t *testing.T) {
		inner := arpRequest()
		buf, off := withHeadroom(inner, HeaderLen)
		start, err := Encap(buf, off, len(inner), vni)
		if err != nil {
			t.Fatal(err)
		}
		mustSend(t, conn, [][]byte{buf[start:]}, netip.AddrPortFrom(u.addrA, DefaultPort))
		awaitReply(t, conn, dec, isARPReplyToUs)
	})

	t.Run("full outer frame", func(t *testing.T) {
		ourVeth, kernelVeth := vethB.Attrs().HardwareAddr, vethA.Attrs().HardwareAddr
		eth := &layers.Ethernet{SrcMAC: ourVeth, DstMAC: kernelVeth, EthernetType: layers.EthernetTypeIPv4}
		ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Flags: layers.IPv4DontFragment, Protocol: layers.IPProtocolUDP,
			SrcIP: u.addrB.AsSlice(), DstIP: u.addrA.AsSlice()}
		udp := &layers.UDP{SrcPort: 40000, DstPort: DefaultPort}
		if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatal(err)
		}
		out := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(out, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
			eth, ip, udp, &layers.VXLAN{ValidIDFlag: true, VNI: vni}, gopacket.Payload(arpRequest())); err != nil {
			t.Fatal(err)
		}
		drainPacketSocket(psock)
		to := &unix.SockaddrLinklayer{Ifindex: vethB.Attrs().Index, Halen: 6}
		copy(to.Addr[:], kernelVeth)
		if err := unix.Sendto(psock, out.Bytes(), 0, to); err != nil {
			t.Fatalf("AF_PACKET send: %v", err)
		}
		awaitReply(t, conn, dec, isARPReplyToUs)

		// The same reply, captured as a full frame on the veth.
		frame := make([]byte, 2048)
		deadline := time.Now().Add(5 * time.Second)
		for tries := 0; tries < 100 && time.Now().Before(deadline); tries++ {
			n, from, err := unix.Recvfrom(psock, frame, 0)
			if err != nil {
				continue // timeout: try again until the deadline
			}
			if ll, ok := from.(*unix.SockaddrLinklayer); !ok || ll.Pkttype == unix.PACKET_OUTGOING {
				continue
			}
			payload, sender, ok := vxlanPayload(frame[:n])
			if !ok {
				continue // underlay ARP, IPv6 noise
			}
			inner, peer, r := dec.Decap(payload, sender)
			if r != DropNone {
				t.Fatalf("Decap dropped a captured kernel frame: %v: % x", r, frame[:n])
			}
			if isARPReplyToUs(inner) {
				if peer.Name != "kernel" {
					t.Fatalf("Decap peer %q", peer.Name)
				}
				return
			}
		}
		t.Fatal("no kernel ARP reply captured as a full frame whose payload Decap accepts")
	})
	if n := dropTotal(dec.Drops); n != 0 {
		t.Errorf("kernel traffic caused %d drops: %v", n, dec.Drops.Snapshot())
	}
}

// awaitReply reads from c until want accepts a decapsulated inner frame;
// every datagram from the kernel must decapsulate.
func awaitReply(t *testing.T, c *Conn, d *Decapper, want func(inner []byte) bool) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	bufs := [][]byte{make([]byte, 2048), make([]byte, 2048), make([]byte, 2048), make([]byte, 2048)}
	sizes := make([]int, len(bufs))
	from := make([]netip.AddrPort, len(bufs))
	for calls := 0; calls < 100; calls++ {
		n, err := c.ReadBatch(bufs, sizes, 0, from)
		if err != nil {
			t.Fatalf("no reply from the kernel VXLAN device: %v", err)
		}
		for i := 0; i < n; i++ {
			inner, peer, r := d.Decap(bufs[i][:sizes[i]], from[i])
			if r != DropNone {
				t.Fatalf("kernel datagram from %v dropped: %v", from[i], r)
			}
			// The kernel picks the outer source port by flow hash from
			// the local port range (default 32768-60999).
			if p := from[i].Port(); p < DefaultPortMin || p >= DefaultPortMax {
				t.Errorf("kernel source port %d outside [%d, %d)", p, DefaultPortMin, DefaultPortMax)
			}
			if want(inner) && peer.Name == "kernel" {
				return
			}
		}
	}
	t.Fatal("kernel never answered")
}

// vxlanPayload is the UDP payload of a captured IPv4 frame to the VXLAN
// port, and its sender, as a socket would receive it.
func vxlanPayload(frame []byte) (payload []byte, from netip.AddrPort, ok bool) {
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.NoCopy)
	ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	udp, _ := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
	if ip == nil || udp == nil || udp.DstPort != DefaultPort {
		return nil, from, false
	}
	src, _ := netip.AddrFromSlice(ip.SrcIP.To4())
	return udp.Payload, netip.AddrPortFrom(src, uint16(udp.SrcPort)), true
}

func drainPacketSocket(fd int) {
	b := make([]byte, 2048)
	for i := 0; i < 1000; i++ {
		if _, _, err := unix.Recvfrom(fd, b, unix.MSG_DONTWAIT); err != nil {
			return
		}
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
