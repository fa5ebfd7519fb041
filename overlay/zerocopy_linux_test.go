//go:build linux

package overlay

import (
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"
)

// TestGSOWriterZeroCopy: with EnableZeroCopy, GSO sends of 10 KB and more
// go with MSG_ZEROCOPY, WriteGather returns only once the kernel released
// the pages (the caller rewrites its buffers right after, and the peer
// still gets every datagram as sent), allocates nothing, and over a veth —
// which copies the pages anyway — the writer gives zerocopy up after
// zeroCopyCopiedLimit copied completions.
func TestGSOWriterZeroCopy(t *testing.T) {
	u := newUnderlayPair(t)
	a := listen(t, u.nsA, ConnConfig{Addr: netip.AddrPortFrom(u.addrA, 0)})
	b := listen(t, u.nsB, ConnConfig{Addr: netip.AddrPortFrom(u.addrB, 0)})
	g, err := NewGSOWriter(a, 0)
	if err != nil {
		t.Skipf("no UDP GSO: %v", err)
	}
	if err := g.EnableZeroCopy(nil); err != nil {
		t.Skipf("no SO_ZEROCOPY: %v", err)
	}
	const segs, size = 8, 1400 // 11200 bytes a message: above zeroCopyMinBytes
	bufs := make([][]byte, segs)
	to := make([]netip.AddrPort, segs)
	for i := range bufs {
		bufs[i], to[i] = make([]byte, size), b.LocalAddr()
	}
	fill := func(round int) {
		for i, d := range bufs {
			for j := range d {
				d[j] = byte(round*31 + i*7 + j)
			}
		}
	}
	send := func(round int) {
		fill(round)
		if n, err := g.WriteGather(bufs, nil, to); n != segs || err != nil {
			t.Errorf("round %d: WriteGather = %d, %v", round, n, err)
		}
		for _, d := range bufs { // the kernel is done with them: scribble
			clear(d)
		}
	}
	rbufs, sizes, from := make([][]byte, 64), make([]int, 64), make([]netip.AddrPort, 64)
	for i := range rbufs {
		rbufs[i] = make([]byte, 2048)
	}
	const rounds = 20
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for r := range rounds {
			send(r)
		}
	}()
	defer func() { <-sent }()
	got := 0
	for got < rounds*segs {
		b.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, err := b.ReadBatch(rbufs, sizes, 0, from)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("got %d of %d datagrams", got, rounds*segs)
		}
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			round, seg := got/segs, got%segs
			d := rbufs[i][:sizes[i]]
			if len(d) != size || d[0] != byte(round*31+seg*7) || d[size-1] != byte(round*31+seg*7+size-1) {
				t.Fatalf("datagram %d (round %d, segment %d) is not what was sent: %d bytes, first %d", got, round, seg, len(d), d[0])
			}
			got++
		}
	}
	zs := g.ZeroCopy()
	if zs.Sent.Load() == 0 {
		t.Fatal("no message went with MSG_ZEROCOPY")
	}
	<-sent
	t.Logf("zerocopy: %d sent, %d copied, on %v", zs.Sent.Load(), zs.Copied.Load(), g.ZeroCopyOn())

	// Allocation-free while on: a fresh writer, fewer sends than it takes
	// to give up.
	g2, err := NewGSOWriter(a, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := g2.EnableZeroCopy(nil); err != nil {
		t.Fatal(err)
	}
	if allocs := testing.AllocsPerRun(10, func() { g2.WriteGather(bufs, nil, to) }); allocs != 0 {
		t.Errorf("WriteGather with zerocopy: %v allocs per run, want 0", allocs)
	}
	if g2.ZeroCopy().Sent.Load() == 0 || !g2.ZeroCopyOn() {
		t.Errorf("second writer: sent %d, on %v", g2.ZeroCopy().Sent.Load(), g2.ZeroCopyOn())
	}
	for range zeroCopyCopiedLimit + 8 {
		g2.WriteGather(bufs, nil, to)
	}
	if zs := g2.ZeroCopy(); zs.Copied.Load() > 0 && (g2.ZeroCopyOn() || zs.GaveUp.Load() != 1) {
		t.Errorf("%d copied completions over a veth, and zerocopy still on", zs.Copied.Load())
	}
}
