//go:build linux

package overlay

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/testenv"
)

// connPair is a Conn in each namespace of an underlayPair.
type connPair struct {
	u    *underlayPair
	a, b *Conn
}

func newConnPair(t testing.TB, batch int) *connPair {
	t.Helper()
	u := newUnderlayPair(t)
	p := &connPair{
		u: u,
		a: listen(t, u.nsA, ConnConfig{Addr: netip.AddrPortFrom(u.addrA, DefaultPort), BatchSize: batch}),
		b: listen(t, u.nsB, ConnConfig{Addr: netip.AddrPortFrom(u.addrB, DefaultPort), BatchSize: batch}),
	}
	// Resolve ARP both ways first: while a neighbour is unresolved the
	// kernel queues only a few packets and drops the rest of a burst.
	for _, d := range [][2]*Conn{{p.a, p.b}, {p.b, p.a}} {
		mustSend(t, d[0], [][]byte{[]byte("prime")}, d[1].LocalAddr())
		recvN(t, d[1], 1, 64, 0)
	}
	return p
}

func mustSend(t testing.TB, c *Conn, bufs [][]byte, to netip.AddrPort) {
	t.Helper()
	dst := make([]netip.AddrPort, len(bufs))
	for i := range dst {
		dst[i] = to
	}
	if n, err := c.WriteBatch(bufs, 0, dst); err != nil || n != len(bufs) {
		t.Fatalf("WriteBatch sent %d of %d: %v", n, len(bufs), err)
	}
}

type received struct {
	data []byte
	from netip.AddrPort
}

// recvN reads until want datagrams arrived, within 5 s and a bounded number
// of calls, into buffers of size bufSize read at offset.
func recvN(t testing.TB, c *Conn, want, bufSize, offset int) []received {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	defer c.SetReadDeadline(time.Time{})
	bufs := make([][]byte, c.BatchSize())
	for i := range bufs {
		bufs[i] = make([]byte, bufSize)
	}
	sizes := make([]int, len(bufs))
	from := make([]netip.AddrPort, len(bufs))
	var out []received
	for calls := 0; len(out) < want && calls < 10*want; calls++ {
		n, err := c.ReadBatch(bufs[:min(len(bufs), want-len(out))], sizes, offset, from)
		if err != nil {
			t.Fatalf("ReadBatch after %d of %d datagrams: %v", len(out), want, err)
		}
		for i := 0; i < n; i++ {
			out = append(out, received{bytes.Clone(bufs[i][offset : offset+sizes[i]]), from[i]})
		}
	}
	if len(out) != want {
		t.Fatalf("received %d datagrams, want %d", len(out), want)
	}
	return out
}

func TestConnNetnsExchange(t *testing.T) {
	p := newConnPair(t, 16)
	tests := []struct {
		name     string
		src, dst *Conn
		count    int
		size     func(i int) int
		offset   int
	}{
		{"A to B, one batch", p.a, p.b, 16, func(i int) int { return 50 + i }, 0},
		{"B to A, several batches", p.b, p.a, 100, func(i int) int { return 1 + i*13 }, 0},
		{"A to B, 1450B at offset", p.a, p.b, 40, func(i int) int { return 1450 }, 10},
		{"empty datagrams", p.a, p.b, 3, func(i int) int { return 0 }, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bufs := make([][]byte, tc.count)
			to := make([]netip.AddrPort, tc.count)
			for i := range bufs {
				bufs[i] = make([]byte, tc.offset+tc.size(i))
				for j := tc.offset; j < len(bufs[i]); j++ {
					bufs[i][j] = byte(i + j)
				}
				to[i] = tc.dst.LocalAddr()
			}
			n, err := tc.src.WriteBatch(bufs, tc.offset, to)
			if err != nil || n != tc.count {
				t.Fatalf("WriteBatch = %d, %v; want %d", n, err, tc.count)
			}
			got := recvN(t, tc.dst, tc.count, 2048, tc.offset)
			for i, r := range got {
				// veth and one socket keep datagrams in order.
				if !bytes.Equal(r.data, bufs[i][tc.offset:]) {
					t.Fatalf("datagram %d: got %d bytes, want %d (or contents differ)", i, len(r.data), len(bufs[i])-tc.offset)
				}
				if r.from != tc.src.LocalAddr() {
					t.Fatalf("datagram %d from %v, want %v", i, r.from, tc.src.LocalAddr())
				}
			}
		})
	}
}

func TestConnNetnsVXLANRoundTrip(t *testing.T) {
	p := newConnPair(t, 8)
	const vni = 99
	var peersB PeerTable
	if err := peersB.Set([]Peer{{Name: "a", Underlay: p.u.addrA, Subnet: netip.MustParsePrefix("10.244.1.0/24"), VNI: vni}}); err != nil {
		t.Fatal(err)
	}
	d := NewDecapper(vni, &peersB)
	f := defaultFlow()
	inner := f.Serialize(t)
	buf, off := withHeadroom(inner, HeaderLen)
	start, err := Encap(buf, off, len(inner), vni)
	if err != nil {
		t.Fatal(err)
	}
	mustSend(t, p.a, [][]byte{buf[start:]}, p.b.LocalAddr())
	r := recvN(t, p.b, 1, 2048, 0)[0]
	got, peer, reason := d.Decap(r.data, r.from)
	if reason != DropNone || peer.Name != "a" || !bytes.Equal(got, inner) {
		t.Fatalf("Decap of received datagram: %v, peer %v, inner equal %v", reason, peer, bytes.Equal(got, inner))
	}
}

func TestConnNetnsAllocs(t *testing.T) {
	p := newConnPair(t, 8)
	const k = 8
	tx := make([][]byte, k)
	to := make([]netip.AddrPort, k)
	rx := make([][]byte, k)
	for i := range tx {
		tx[i] = make([]byte, 64+1400)
		rx[i] = make([]byte, 64+1500)
		to[i] = p.b.LocalAddr()
	}
	sizes := make([]int, k)
	from := make([]netip.AddrPort, k)
	if err := p.b.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	var failure error
	roundTrip := func() {
		if n, err := p.a.WriteBatch(tx, 64, to); err != nil || n != k {
			failure = errors.Join(failure, err, errors.New("short write"))
			return
		}
		for got, calls := 0, 0; got < k && calls < 100; calls++ {
			n, err := p.b.ReadBatch(rx[:k-got], sizes, 64, from)
			if err != nil {
				failure = errors.Join(failure, err)
				return
			}
			got += n
		}
	}
	roundTrip()
	allocs := testing.AllocsPerRun(200, roundTrip)
	if failure != nil {
		t.Fatal(failure)
	}
	if allocs != 0 {
		t.Errorf("WriteBatch+ReadBatch of %d datagrams: %v allocs per run, want 0", k, allocs)
	}
}

func TestConnNetnsWriteErrors(t *testing.T) {
	p := newConnPair(t, 4)
	ok := []byte("fits")
	tooBig := make([]byte, 1500) // + 28 bytes IPv4/UDP > 1500 MTU, DF set
	dst := p.b.LocalAddr()
	tests := []struct {
		name    string
		bufs    [][]byte
		to      []netip.AddrPort
		wantN   int
		wantErr func(error) bool
	}{
		{"DF: too big for the MTU", [][]byte{ok, ok, tooBig, ok}, []netip.AddrPort{dst, dst, dst, dst}, 2,
			func(err error) bool { return errors.Is(err, syscall.EMSGSIZE) }},
		{"IPv6 destination", [][]byte{ok, ok, ok}, []netip.AddrPort{dst, netip.MustParseAddrPort("[2001:db8::1]:4789"), dst}, 1,
			func(err error) bool { return err != nil }},
		{"short to slice", [][]byte{ok, ok}, []netip.AddrPort{dst}, 0,
			func(err error) bool { return err != nil }},
		{"offset beyond buffer", [][]byte{ok}, []netip.AddrPort{dst}, 0, // at offset 10
			func(err error) bool { return err != nil }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			offset := 0
			if tc.name == "offset beyond buffer" {
				offset = 10
			}
			n, err := p.a.WriteBatch(tc.bufs, offset, tc.to)
			if n != tc.wantN || !tc.wantErr(err) {
				t.Fatalf("WriteBatch = %d, %v; want %d and a matching error", n, err, tc.wantN)
			}
			if n > 0 {
				recvN(t, p.b, n, 2048, 0)
			}
		})
	}
}

func TestConnNetnsTruncated(t *testing.T) {
	p := newConnPair(t, 4)
	mustSend(t, p.a, [][]byte{make([]byte, 100), []byte("small")}, p.b.LocalAddr())
	got := recvN(t, p.b, 2, 32, 0)
	if len(got[0].data) != 0 || string(got[1].data) != "small" {
		t.Errorf("got sizes %d, %d; want 0 (truncated) and 5", len(got[0].data), len(got[1].data))
	}
	if p.b.Truncated() != 1 {
		t.Errorf("Truncated = %d, want 1", p.b.Truncated())
	}
}

func TestConnNetnsCloseUnblocksRead(t *testing.T) {
	testenv.RequireRoot(t)
	c := listen(t, newNetns(t), ConnConfig{Addr: netip.MustParseAddrPort("127.0.0.1:0")})
	errc := make(chan error, 1)
	go func() {
		bufs := [][]byte{make([]byte, 100)}
		_, err := c.ReadBatch(bufs, make([]int, 1), 0, nil)
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond) // let the reader park in the netpoller
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("ReadBatch after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ReadBatch still blocked 5 s after Close")
	}
}

func TestConnNetnsOptions(t *testing.T) {
	testenv.RequireRoot(t)
	ns := newNetns(t)
	c := listen(t, ns, ConnConfig{Addr: netip.MustParseAddrPort("127.0.0.1:0")})
	rcv, snd, err := c.SocketBuffers()
	if err != nil {
		t.Fatal(err)
	}
	// As root, the FORCE variants grant the full request (reported doubled).
	if rcv < DefaultSocketBuffer || snd < DefaultSocketBuffer {
		t.Errorf("socket buffers rcv=%d snd=%d, want >= %d", rcv, snd, DefaultSocketBuffer)
	}
	var pmtu int
	if err := c.rc.Control(func(fd uintptr) {
		pmtu, err = unix.GetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER)
	}); err != nil || pmtu != unix.IP_PMTUDISC_DO {
		t.Errorf("IP_MTU_DISCOVER = %d (%v), want IP_PMTUDISC_DO", pmtu, err)
	}
	if c.BatchSize() != DefaultBatchSize || !c.LocalAddr().Addr().Is4() || c.LocalAddr().Port() == 0 {
		t.Errorf("BatchSize %d, LocalAddr %v", c.BatchSize(), c.LocalAddr())
	}

	// SO_REUSEPORT: a second socket on the same port only with the flag.
	addr := netip.MustParseAddrPort("127.0.0.1:4789")
	listen(t, ns, ConnConfig{Addr: addr, ReusePort: true})
	listen(t, ns, ConnConfig{Addr: addr, ReusePort: true})
	err = inNetns(ns, func() error {
		c, err := ListenConn(context.Background(), ConnConfig{Addr: addr})
		if err == nil {
			c.Close()
		}
		return err
	})
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("third bind without SO_REUSEPORT: %v, want EADDRINUSE", err)
	}

	bad := []struct {
		name string
		cfg  ConnConfig
		want error
	}{
		{"GSO", ConnConfig{GSO: true}, ErrOffloadNotImplemented},
		{"GRO", ConnConfig{GRO: true}, ErrOffloadNotImplemented},
		{"IPv6", ConnConfig{Addr: netip.MustParseAddrPort("[::1]:0")}, nil},
		{"batch too big", ConnConfig{BatchSize: MaxBatchSize + 1}, nil},
		{"negative batch", ConnConfig{BatchSize: -1}, nil},
	}
	for _, tc := range bad {
		err := inNetns(ns, func() error {
			c, err := ListenConn(context.Background(), tc.cfg)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("%s: ListenConn error %v, want %v", tc.name, err, tc.want)
		}
	}
}

func BenchmarkConnBatchRoundTrip(b *testing.B) {
	for _, size := range []int{64, 1400} {
		b.Run(map[int]string{64: "64B", 1400: "1400B"}[size], func(b *testing.B) {
			const k = 32
			p := newConnPair(b, k)
			tx := make([][]byte, k)
			rx := make([][]byte, k)
			to := make([]netip.AddrPort, k)
			back := make([]netip.AddrPort, k)
			for i := range tx {
				tx[i] = make([]byte, size)
				rx[i] = make([]byte, 2048)
				to[i], back[i] = p.b.LocalAddr(), p.a.LocalAddr()
			}
			sizes := make([]int, k)
			from := make([]netip.AddrPort, k)
			recv := func(c *Conn) {
				for got, calls := 0, 0; got < k; calls++ {
					if calls > 1000 {
						b.Fatal("too many ReadBatch calls")
					}
					n, err := c.ReadBatch(rx[:k-got], sizes, 0, from)
					if err != nil {
						b.Fatal(err)
					}
					got += n
				}
			}
			for _, c := range []*Conn{p.a, p.b} {
				c.SetReadDeadline(time.Now().Add(10 * time.Minute))
			}
			b.SetBytes(2 * k * int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if n, err := p.a.WriteBatch(tx, 0, to); err != nil || n != k {
					b.Fatal(n, err)
				}
				recv(p.b)
				if n, err := p.b.WriteBatch(tx, 0, back); err != nil || n != k {
					b.Fatal(n, err)
				}
				recv(p.a)
			}
			b.ReportMetric(float64(2*k*b.N)/b.Elapsed().Seconds(), "datagrams/s")
		})
	}
}

// BenchmarkConnStdlibRoundTrip is the reference for
// BenchmarkConnBatchRoundTrip: the same exchange with one
// WriteToUDPAddrPort/ReadFromUDPAddrPort syscall per datagram on the same
// sockets.
func BenchmarkConnStdlibRoundTrip(b *testing.B) {
	for _, size := range []int{64, 1400} {
		b.Run(map[int]string{64: "64B", 1400: "1400B"}[size], func(b *testing.B) {
			const k = 32
			p := newConnPair(b, k)
			msg := make([]byte, size)
			rx := make([]byte, 2048)
			for _, c := range []*Conn{p.a, p.b} {
				c.SetReadDeadline(time.Now().Add(10 * time.Minute))
			}
			oneWay := func(src, dst *Conn) {
				for i := 0; i < k; i++ {
					if _, err := src.uc.WriteToUDPAddrPort(msg, dst.LocalAddr()); err != nil {
						b.Fatal(err)
					}
				}
				for i := 0; i < k; i++ {
					if _, _, err := dst.uc.ReadFromUDPAddrPort(rx); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.SetBytes(2 * k * int64(size))
			b.ReportAllocs()
			for b.Loop() {
				oneWay(p.a, p.b)
				oneWay(p.b, p.a)
			}
			b.ReportMetric(float64(2*k*b.N)/b.Elapsed().Seconds(), "datagrams/s")
		})
	}
}
