package vswitch

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/weftnet/weft/packet"
)

// l4Frame builds an Ethernet/IPv4/TCP or UDP frame with gopacket, with
// correct checksums. flags are TCP flags (ignored for UDP).
func l4Frame(t testing.TB, dstMAC, srcMAC packet.MAC, src netip.Addr, sport uint16, dst netip.Addr, dport uint16, proto uint8, flags uint8, payload int) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr(srcMAC[:]), DstMAC: net.HardwareAddr(dstMAC[:]), EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Id: 7, Flags: layers.IPv4DontFragment, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	data := make([]byte, payload)
	for i := range data {
		data[i] = byte(i * 7)
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	var err error
	if proto == packet.IPProtoTCP {
		ip.Protocol = layers.IPProtocolTCP
		tcp := &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), Seq: 1000, Ack: 2000, Window: 65535,
			FIN: flags&packet.TCPFlagFIN != 0, SYN: flags&packet.TCPFlagSYN != 0, RST: flags&packet.TCPFlagRST != 0,
			PSH: flags&packet.TCPFlagPSH != 0, ACK: flags&packet.TCPFlagACK != 0}
		if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatal(err)
		}
		err = gopacket.SerializeLayers(buf, opts, eth, ip, tcp, gopacket.Payload(data))
	} else {
		ip.Protocol = layers.IPProtocolUDP
		udp := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
		if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatal(err)
		}
		err = gopacket.SerializeLayers(buf, opts, eth, ip, udp, gopacket.Payload(data))
	}
	if err != nil {
		t.Fatal(err)
	}
	return withCap(buf.Bytes())
}

// flowOf is what checkFrame reports about a frame.
type flowOf struct {
	src   netip.Addr
	sport uint16
	dst   netip.Addr
	dport uint16
	flags uint8
}

// checkFrame decodes f with gopacket, checks that its IPv4 and TCP/UDP
// checksums are what gopacket computes for the same headers (a UDP
// checksum of 0 is accepted only if zeroOK), and returns its addresses.
func checkFrame(t testing.TB, f []byte, zeroOK bool) flowOf {
	t.Helper()
	p := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
	ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if ip == nil {
		t.Fatalf("no IPv4 in frame: %v", p)
	}
	var got flowOf
	got.src, _ = netip.AddrFromSlice(ip.SrcIP)
	got.dst, _ = netip.AddrFromSlice(ip.DstIP)
	hdr := f[packet.EthHdrLen : packet.EthHdrLen+int(ip.IHL)*4]
	if packet.Fold(packet.Checksum(hdr, 0)) != 0xffff {
		t.Errorf("IPv4 header checksum %#04x wrong", ip.Checksum)
	}
	l4 := f[packet.EthHdrLen+int(ip.IHL)*4 : packet.EthHdrLen+int(ip.Length)]
	want := func(proto uint8, off int) {
		sum := binary.BigEndian.Uint16(l4[off:])
		if proto == packet.IPProtoUDP && sum == 0 && zeroOK {
			return
		}
		ps := packet.PseudoHeaderSum4([4]byte(ip.SrcIP.To4()), [4]byte(ip.DstIP.To4()), proto, uint16(len(l4)))
		if packet.Fold(packet.Checksum(l4, ps)) != 0xffff {
			t.Errorf("%d checksum %#04x wrong", proto, sum)
		}
	}
	switch {
	case p.Layer(layers.LayerTypeTCP) != nil:
		tcp := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		got.sport, got.dport = uint16(tcp.SrcPort), uint16(tcp.DstPort)
		got.flags = l4[13]
		want(packet.IPProtoTCP, packet.TCPOffChecksum)
		// gopacket's own checksum of the same segment must agree.
		re := gopacket.NewSerializeBuffer()
		if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatal(err)
		}
		if err := gopacket.SerializeLayers(re, gopacket.SerializeOptions{ComputeChecksums: true}, tcp, gopacket.Payload(tcp.Payload)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(re.Bytes()[:len(l4)], l4) {
			t.Errorf("gopacket re-serialises the TCP segment differently (checksum)")
		}
	case p.Layer(layers.LayerTypeUDP) != nil:
		udp := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
		got.sport, got.dport = uint16(udp.SrcPort), uint16(udp.DstPort)
		want(packet.IPProtoUDP, packet.UDPOffChecksum)
	}
	return got
}

func ap(s string) netip.Addr { return netip.MustParseAddr(s) }
