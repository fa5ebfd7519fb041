//go:build linux

package overlay

import (
	"net"
	"runtime"
	"testing"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/weftnet/weft/internal/testenv"
)

// TestXNetReadBatchAllocates records why Conn makes raw recvmmsg/sendmmsg
// calls instead of using golang.org/x/net/ipv4.PacketConn: x/net's ReadBatch
// turns every received sockaddr into a fresh net.IP and *net.UDPAddr
// (internal/socket parseInetAddr), i.e. heap allocations per datagram, while
// Conn.ReadBatch allocates nothing (TestConnNetnsAllocs). If this test starts
// failing, x/net has fixed that and Conn could be reconsidered.
func TestXNetReadBatchAllocates(t *testing.T) {
	testenv.RequireRoot(t)
	ns := newNetns(t)
	var rx, tx *net.UDPConn
	err := inNetns(ns, func() error {
		var err error
		if rx, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
			return err
		}
		tx, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rx.Close(); tx.Close() })

	const k = 8
	dst := net.UDPAddrFromAddrPort(rx.LocalAddr().(*net.UDPAddr).AddrPort()) // reused: no per-send allocation
	out := make([]ipv4.Message, k)
	in := make([]ipv4.Message, k)
	for i := range out {
		out[i] = ipv4.Message{Buffers: [][]byte{make([]byte, 100)}, Addr: dst}
		in[i] = ipv4.Message{Buffers: [][]byte{make([]byte, 1500)}}
	}
	prx, ptx := ipv4.NewPacketConn(rx), ipv4.NewPacketConn(tx)
	if err := rx.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}

	var failure error
	write := func() {
		if n, err := ptx.WriteBatch(out, 0); err != nil || n != k {
			failure = err
		}
	}
	read := func() {
		for got, calls := 0, 0; got < k && calls < 100; calls++ {
			n, err := prx.ReadBatch(in[:k-got], 0)
			if err != nil {
				failure = err
				return
			}
			got += n
		}
	}
	write()
	read()
	// Measure each side alone with MemStats, as AllocsPerRun does, so the
	// datagrams of one batch can be sent unmeasured before the read.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	var ms runtime.MemStats
	mallocs := func() uint64 { runtime.ReadMemStats(&ms); return ms.Mallocs }
	const rounds = 50
	var readAllocs, writeAllocs uint64
	for r := 0; r < rounds && failure == nil; r++ {
		m0 := mallocs()
		write()
		m1 := mallocs()
		read()
		m2 := mallocs()
		writeAllocs += m1 - m0
		readAllocs += m2 - m1
	}
	if failure != nil {
		t.Fatal(failure)
	}
	perDatagram := float64(readAllocs) / (rounds * k)
	t.Logf("x/net ipv4.PacketConn: WriteBatch %.2f allocs per batch of %d, ReadBatch %.2f allocs per datagram",
		float64(writeAllocs)/rounds, k, perDatagram)
	if perDatagram < 1 {
		t.Errorf("x/net ReadBatch allocates %.2f per datagram: the raw recvmmsg in Conn may no longer be needed", perDatagram)
	}
}
