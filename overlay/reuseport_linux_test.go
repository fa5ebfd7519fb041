package overlay

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/testenv"
	"github.com/weftnet/weft/packet"
)

// vxlanTCP is a VXLAN datagram carrying an inner IPv4/TCP frame of flow
// (sport -> 10.244.1.3:5201) whose payload's first two bytes are seq.
func vxlanTCP(sport uint16, seq uint16) []byte {
	const inner = packet.EthHdrLen + packet.IPv4MinHdrLen + packet.TCPMinHdrLen + 2
	b := make([]byte, HeaderLen+inner)
	f := b[HeaderLen:]
	packet.PutEth(f, packet.MAC{2, 0, 0, 0, 0, 2}, packet.MAC{2, 0, 0, 0, 0, 1}, packet.EtherTypeIPv4)
	packet.PutIPv4(f[packet.EthHdrLen:], packet.IPv4MinHdrLen+packet.TCPMinHdrLen+2, 1, true, 64, packet.IPProtoTCP,
		[4]byte{10, 244, 0, 3}, [4]byte{10, 244, 1, 3})
	tcp := f[packet.EthHdrLen+packet.IPv4MinHdrLen:]
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], 5201)
	binary.BigEndian.PutUint16(tcp[packet.TCPMinHdrLen:], seq)
	if _, err := Encap(b, HeaderLen, inner, 1); err != nil {
		panic(err)
	}
	return b
}

// TestSpreadByInnerFlow: with the BPF program on a group of SO_REUSEPORT
// sockets, datagrams from one sender (one outer 4-tuple, which the kernel
// alone would send to one socket) spread over the sockets by inner flow,
// and every datagram of one flow reaches the same socket, in order.
func TestSpreadByInnerFlow(t *testing.T) {
	testenv.RequireRoot(t)
	ns := newNetns(t)
	addr := netip.MustParseAddrPort("127.0.0.1:4789")
	const socks, flows, perFlow = 2, 16, 4
	group := make([]*Conn, socks)
	for i := range group {
		group[i] = listen(t, ns, ConnConfig{Addr: addr, ReusePort: true})
	}
	if err := SpreadByInnerFlow(group[0], socks); err != nil {
		t.Fatal(err)
	}
	if err := SpreadByInnerFlow(group[0], 0); err == nil {
		t.Error("SpreadByInnerFlow accepted 0 sockets")
	}
	sender := listen(t, ns, ConnConfig{Addr: netip.MustParseAddrPort("127.0.0.1:0")})
	var dgrams [][]byte
	for seq := range perFlow {
		for f := range flows {
			dgrams = append(dgrams, vxlanTCP(uint16(40000+2*f), uint16(seq))) // even ports, as Linux's connect() picks
		}
	}
	mustSend(t, sender, dgrams, addr)

	flowSock := map[uint16]int{}
	nextSeq := map[uint16]uint16{}
	perSock := make([]int, socks)
	total := 0
	deadline := time.Now().Add(5 * time.Second)
	for total < len(dgrams) && time.Now().Before(deadline) {
		for i, c := range group {
			c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			bufs := [][]byte{make([]byte, 256), make([]byte, 256), make([]byte, 256), make([]byte, 256)}
			sizes := make([]int, len(bufs))
			n, _ := c.ReadBatch(bufs, sizes, 0, nil)
			for k := range n {
				d := bufs[k][:sizes[k]]
				tcp := d[HeaderLen+packet.EthHdrLen+packet.IPv4MinHdrLen:]
				sport, seq := binary.BigEndian.Uint16(tcp[0:]), binary.BigEndian.Uint16(tcp[packet.TCPMinHdrLen:])
				if s, ok := flowSock[sport]; ok && s != i {
					t.Errorf("flow %d reached socket %d and socket %d", sport, s, i)
				}
				flowSock[sport] = i
				if seq != nextSeq[sport] {
					t.Errorf("flow %d: datagram %d arrived where %d was due", sport, seq, nextSeq[sport])
				}
				nextSeq[sport] = seq + 1
				perSock[i]++
				total++
			}
		}
	}
	if total != len(dgrams) {
		t.Fatalf("received %d of %d datagrams", total, len(dgrams))
	}
	for i, n := range perSock {
		if n == 0 {
			t.Errorf("socket %d got none of %d flows (per socket: %v)", i, flows, perSock)
		}
	}
	t.Logf("%d flows over %d sockets: %v datagrams", flows, socks, perSock)
}
