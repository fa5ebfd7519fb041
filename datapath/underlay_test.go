package datapath

import (
	"bytes"
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/testenv"
	"github.com/weftnet/weft/netdev"
	"github.com/weftnet/weft/overlay"
)

// TestPlainWriterJoinsTails: without UDP GSO, datagrams given as head and
// tail (a TCP super-frame's segments) leave joined, one per message, and
// whole datagrams still leave as they are; in a namespace of the test's
// own, over its loopback.
func TestPlainWriterJoinsTails(t *testing.T) {
	testenv.RequireRoot(t)
	name := testenv.UniqueName("wdpw")
	ns, err := netdev.NewNetns(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netdev.DeleteNetns(name) })
	if err := netdev.LinkUp(ns, "lo"); err != nil {
		t.Fatal(err)
	}
	var tx, rx *overlay.Conn
	err = netdev.Do(ns, func() error {
		var err error
		lo := netip.MustParseAddr("127.0.0.1")
		if tx, err = overlay.ListenConn(context.Background(), overlay.ConnConfig{Addr: netip.AddrPortFrom(lo, 0)}); err != nil {
			return err
		}
		rx, err = overlay.ListenConn(context.Background(), overlay.ConnConfig{Addr: netip.AddrPortFrom(lo, 0)})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Close(); rx.Close() })

	want := [][]byte{bytes.Repeat([]byte{1}, 300), bytes.Repeat([]byte{2}, 1400), bytes.Repeat([]byte{3}, 50)}
	heads := [][]byte{want[0][:40], want[1][:1400], want[2][:0]}
	tails := [][]byte{want[0][40:], nil, want[2]}
	to := []netip.AddrPort{rx.LocalAddr(), rx.LocalAddr(), rx.LocalAddr()}
	w := &PlainWriter{C: tx}
	if n, err := w.WriteGather(heads, tails, to); n != len(want) || err != nil {
		t.Fatalf("WriteGather = %d, %v", n, err)
	}
	if n, err := w.WriteGather(want[:1], nil, to); n != 1 || err != nil {
		t.Fatalf("WriteGather without tails = %d, %v", n, err)
	}
	want = append(want, want[0])
	bufs, sizes, from := make([][]byte, 8), make([]int, 8), make([]netip.AddrPort, 8)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	rx.SetReadDeadline(time.Now().Add(5 * time.Second))
	for got := 0; got < len(want); {
		n, err := rx.ReadBatch(bufs, sizes, 0, from)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			if !bytes.Equal(bufs[i][:sizes[i]], want[got]) {
				t.Fatalf("datagram %d: %d bytes, want %d (%x...)", got, sizes[i], len(want[got]), want[got][:1])
			}
			got++
		}
	}
}
