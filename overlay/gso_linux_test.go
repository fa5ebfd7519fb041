//go:build linux

package overlay

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// gsoRun is one WriteGSO run: count datagrams of seg bytes, the last last
// bytes long (0 = seg), each filled with its own byte pattern.
type gsoRun struct {
	seg, count, last int
}

func (r gsoRun) datagrams(tag byte) [][]byte {
	var out [][]byte
	for i := range r.count {
		n := r.seg
		if i == r.count-1 && r.last > 0 {
			n = r.last
		}
		d := make([]byte, n)
		for j := range d {
			d[j] = tag + byte(i) + byte(j*3)
		}
		out = append(out, d)
	}
	return out
}

// receiveAll reads datagrams from the GRO reader (splitting coalesced
// reads by their segment size) or the plain Conn until want arrived.
func receiveAll(t *testing.T, c *Conn, gro *GROReader, want int) [][]byte {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	defer c.SetReadDeadline(time.Time{})
	bufs := make([][]byte, 8)
	for i := range bufs {
		bufs[i] = make([]byte, MaxGROBytes)
	}
	sizes, segs := make([]int, len(bufs)), make([]int, len(bufs))
	var out [][]byte
	for calls := 0; len(out) < want && calls < 10*want; calls++ {
		var n int
		var err error
		if gro != nil {
			n, err = gro.ReadBatch(bufs, sizes, segs, 0, nil)
		} else {
			n, err = c.ReadBatch(bufs, sizes, 0, nil)
			copy(segs, sizes)
		}
		if err != nil {
			t.Fatalf("read after %d of %d datagrams: %v", len(out), want, err)
		}
		for i := range n {
			b := bufs[i][:sizes[i]]
			for len(b) > 0 {
				k := min(segs[i], len(b))
				out = append(out, bytes.Clone(b[:k]))
				b = b[k:]
			}
		}
	}
	if len(out) != want {
		t.Fatalf("received %d datagrams, want %d", len(out), want)
	}
	return out
}

func TestGSONetnsRoundTrip(t *testing.T) {
	runs := []gsoRun{
		{seg: 1000, count: 10, last: 300}, // short last
		{seg: 1400, count: 1},             // a single datagram
		{seg: 1200, count: MaxGSOSegments / 2},
		{seg: 50, count: MaxGSOSegments}, // the most segments
	}
	for _, gro := range []bool{true, false} {
		t.Run(fmt.Sprintf("gro=%v", gro), func(t *testing.T) {
			p := newConnPair(t, 8)
			w, err := NewGSOWriter(p.a, 0)
			if err != nil {
				t.Fatal(err)
			}
			var r *GROReader
			if gro {
				if r, err = NewGROReader(p.b, 0); err != nil {
					t.Fatal(err)
				}
			}
			var bufs [][]byte
			var segs []int
			var to []netip.AddrPort
			var want [][]byte
			for i, run := range runs {
				ds := run.datagrams(byte(i * 40))
				want = append(want, ds...)
				bufs = append(bufs, bytes.Join(ds, nil))
				segs = append(segs, run.seg)
				to = append(to, p.b.LocalAddr())
			}
			n, err := w.WriteGSO(bufs, segs, to)
			if err != nil || n != len(bufs) {
				t.Fatalf("WriteGSO sent %d of %d runs: %v", n, len(bufs), err)
			}
			got := receiveAll(t, p.b, r, len(want))
			for i := range want {
				if !bytes.Equal(got[i], want[i]) {
					t.Fatalf("datagram %d: got %d bytes %x..., want %d bytes %x...", i, len(got[i]), got[i][:min(8, len(got[i]))], len(want[i]), want[i][:min(8, len(want[i]))])
				}
			}
			if w.Disabled() {
				t.Error("GSO turned itself off on a veth that checksums")
			}
		})
	}
}

func TestGSONetnsRejects(t *testing.T) {
	p := newConnPair(t, 4)
	w, err := NewGSOWriter(p.a, 0)
	if err != nil {
		t.Fatal(err)
	}
	dst := p.b.LocalAddr()
	ok := make([]byte, 100)
	cases := []struct {
		name string
		run  []byte
		seg  int
		to   netip.AddrPort
	}{
		{"too many segments", make([]byte, 10*(MaxGSOSegments+1)), 10, dst},
		{"too many bytes", make([]byte, MaxGSOBytes+1), 1400, dst},
		{"zero segment size", ok, 0, dst},
		{"empty", nil, 100, dst},
		{"IPv6 destination", ok, 100, netip.MustParseAddrPort("[fd00::1]:4789")},
		{"segment too big for the path (EMSGSIZE)", make([]byte, 3000), 1500, dst},
	}
	for _, c := range cases {
		n, err := w.WriteGSO([][]byte{ok, c.run, ok}, []int{100, c.seg, 100}, []netip.AddrPort{dst, c.to, dst})
		if err == nil || n != 1 {
			t.Errorf("%s: sent %d runs, err %v; want 1 and an error", c.name, n, err)
		}
	}
	// The good runs before each bad one arrived.
	receiveAll(t, p.b, nil, len(cases))
}

// TestGSONetnsFallback makes UDP_SEGMENT sends fail with EIO, as the kernel
// does when the egress path cannot checksum or segment (this kernel
// segments in software even with transmit checksumming off, so the error is
// injected): the writer must turn GSO off and still deliver every datagram,
// in order.
func TestGSONetnsFallback(t *testing.T) {
	p := newConnPair(t, 8)
	w, err := NewGSOWriter(p.a, 4) // small batch: runs split across sendmmsg calls
	if err != nil {
		t.Fatal(err)
	}
	w.eioOnGSO = true
	run := gsoRun{seg: 500, count: 7, last: 120}
	ds := run.datagrams(9)
	single := []byte("single")
	n, err := w.WriteGSO([][]byte{single, bytes.Join(ds, nil), single}, []int{100, run.seg, 100},
		[]netip.AddrPort{p.b.LocalAddr(), p.b.LocalAddr(), p.b.LocalAddr()})
	if err != nil || n != 3 {
		t.Fatalf("WriteGSO sent %d of 3 runs: %v", n, err)
	}
	if !w.Disabled() {
		t.Error("GSO still on after EIO")
	}
	got := receiveAll(t, p.b, nil, len(ds)+2)
	want := append(append([][]byte{single}, ds...), single)
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("datagram %d differs", i)
		}
	}
}

func TestGSONetnsAllocs(t *testing.T) {
	p := newConnPair(t, 8)
	w, err := NewGSOWriter(p.a, 0)
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewGROReader(p.b, 0)
	if err != nil {
		t.Fatal(err)
	}
	run := bytes.Join(gsoRun{seg: 1400, count: 40}.datagrams(1), nil)
	bufs, segs, to := [][]byte{run, run}, []int{1400, 1400}, []netip.AddrPort{p.b.LocalAddr(), p.b.LocalAddr()}
	rx := make([][]byte, 4)
	for i := range rx {
		rx[i] = make([]byte, MaxGROBytes)
	}
	sizes, rsegs, from := make([]int, 4), make([]int, 4), make([]netip.AddrPort, 4)
	if err := p.b.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	var failure error
	roundTrip := func() {
		if n, err := w.WriteGSO(bufs, segs, to); err != nil || n != 2 {
			failure = errors.Join(failure, err, errors.New("short write"))
			return
		}
		for got, calls := 0, 0; got < 2*len(run) && calls < 200; calls++ {
			n, err := r.ReadBatch(rx, sizes, rsegs, 0, from)
			if err != nil {
				failure = errors.Join(failure, err)
				return
			}
			for i := range n {
				got += sizes[i]
			}
		}
	}
	roundTrip()
	allocs := testing.AllocsPerRun(100, roundTrip)
	if failure != nil {
		t.Fatal(failure)
	}
	if allocs != 0 {
		t.Errorf("WriteGSO+GRO ReadBatch: %v allocs per run, want 0", allocs)
	}
}

func TestGROSegSize(t *testing.T) {
	mk := func(level, typ int32, data []byte) []byte {
		b := make([]byte, unix.CmsgSpace(len(data)))
		h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
		h.Level, h.Type = level, typ
		h.SetLen(unix.CmsgLen(len(data)))
		copy(b[unix.CmsgLen(0):], data)
		return b
	}
	seg := make([]byte, 4)
	*(*int32)(unsafe.Pointer(&seg[0])) = 1448
	other := mk(unix.SOL_SOCKET, unix.SO_RXQ_OVFL, []byte{1, 0, 0, 0})
	gro := mk(unix.SOL_UDP, unix.UDP_GRO, seg)
	cases := []struct {
		name string
		oob  []byte
		want int
	}{
		{"gro", gro, 1448},
		{"after another", append(bytes.Clone(other), gro...), 1448},
		{"none", other, 0},
		{"empty", nil, 0},
		{"truncated", gro[:unix.CmsgLen(0)+2], 0},
		{"bad length", func() []byte { b := bytes.Clone(gro); b[0] = 200; return b }(), 0},
	}
	for _, c := range cases {
		if got := groSegSize(c.oob, len(c.oob)); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
}

// gatherCase builds scattered datagrams: runs of equal sizes (with a
// shorter last), singles, size changes, and more than MaxGSOSegments of
// one size in a row.
func gatherCase() [][]byte {
	var ds [][]byte
	add := func(n, size int) {
		for range n {
			d := make([]byte, size)
			for j := range d {
				d[j] = byte(len(ds)*7 + j)
			}
			ds = append(ds, d)
		}
	}
	add(10, 114)
	add(1, 60) // shorter: ends the run
	add(1, 1400)
	add(MaxGSOSegments+5, 200)
	add(3, 900)
	add(1, 901) // longer: starts a new run
	return ds
}

// TestGatherNetns: WriteGather's datagrams arrive whole and in order,
// with UDP GRO on the receiver or without, given whole or (tails) as a
// head and a tail cut at different places: all in the head, an empty
// head, a few header bytes and the rest.
func TestGatherNetns(t *testing.T) {
	for _, c := range []struct{ gro, tails bool }{{true, false}, {false, false}, {true, true}, {false, true}} {
		gro := c.gro
		t.Run(fmt.Sprintf("gro=%v/tails=%v", gro, c.tails), func(t *testing.T) {
			p := newConnPair(t, 8)
			w, err := NewGSOWriter(p.a, 4) // small batch: several sendmmsg calls
			if err != nil {
				t.Fatal(err)
			}
			var r *GROReader
			if gro {
				if r, err = NewGROReader(p.b, 0); err != nil {
					t.Fatal(err)
				}
			}
			ds := gatherCase()
			to := make([]netip.AddrPort, len(ds))
			for i := range to {
				to[i] = p.b.LocalAddr()
			}
			heads, tails := ds, [][]byte(nil)
			if c.tails {
				heads, tails = make([][]byte, len(ds)), make([][]byte, len(ds))
				for i, d := range ds {
					cut := [...]int{len(d), 0, min(30, len(d))}[i%3]
					heads[i], tails[i] = d[:cut], d[cut:]
				}
			}
			if n, err := w.WriteGather(heads, tails, to); err != nil || n != len(ds) {
				t.Fatalf("WriteGather sent %d of %d: %v", n, len(ds), err)
			}
			got := receiveAll(t, p.b, r, len(ds))
			for i := range ds {
				if !bytes.Equal(got[i], ds[i]) {
					t.Fatalf("datagram %d: got %d bytes, want %d", i, len(got[i]), len(ds[i]))
				}
			}
		})
	}
}

func TestGatherNetnsErrorsAndFallback(t *testing.T) {
	p := newConnPair(t, 4)
	w, err := NewGSOWriter(p.a, 0)
	if err != nil {
		t.Fatal(err)
	}
	dst := p.b.LocalAddr()
	ok := make([]byte, 100)
	// A datagram too big for the path fails its message; the ones before
	// it (another size, so another message) went out.
	ds := [][]byte{ok, ok, make([]byte, 1600), ok}
	n, err := w.WriteGather(ds, nil, []netip.AddrPort{dst, dst, dst, dst})
	if err == nil || n != 2 {
		t.Fatalf("sent %d, err %v; want 2 and EMSGSIZE", n, err)
	}
	if n, err := w.WriteGather([][]byte{ok, {}}, nil, []netip.AddrPort{dst, dst}); err == nil || n != 1 {
		t.Errorf("empty datagram: sent %d, err %v", n, err)
	}
	receiveAll(t, p.b, nil, 3)

	w.eioOnGSO = true
	ds = gatherCase()
	to := make([]netip.AddrPort, len(ds))
	for i := range to {
		to[i] = dst
	}
	if n, err := w.WriteGather(ds, nil, to); err != nil || n != len(ds) {
		t.Fatalf("after EIO: sent %d of %d: %v", n, len(ds), err)
	}
	if !w.Disabled() {
		t.Error("GSO still on after EIO")
	}
	got := receiveAll(t, p.b, nil, len(ds))
	for i := range ds {
		if !bytes.Equal(got[i], ds[i]) {
			t.Fatalf("datagram %d differs", i)
		}
	}
}

func TestGatherNetnsAllocs(t *testing.T) {
	p := newConnPair(t, 8)
	w, err := NewGSOWriter(p.a, 0)
	if err != nil {
		t.Fatal(err)
	}
	ds := gatherCase()
	to := make([]netip.AddrPort, len(ds))
	for i := range to {
		to[i] = p.b.LocalAddr()
	}
	allocs := testing.AllocsPerRun(100, func() {
		if n, err := w.WriteGather(ds, nil, to); err != nil || n != len(ds) {
			t.Fatalf("sent %d of %d: %v", n, len(ds), err)
		}
	})
	if allocs != 0 {
		t.Errorf("WriteGather: %v allocs per call, want 0", allocs)
	}
}

// TestGROReaderSpin: with a Spin deadline ahead, a read that finds nothing
// retries instead of parking (Spins grows) and still returns the datagram
// that comes meanwhile; without one, or with one passed, it never spins.
func TestGROReaderSpin(t *testing.T) {
	p := newConnPair(t, 8)
	r, err := NewGROReader(p.b, 0)
	if err != nil {
		t.Fatal(err)
	}
	rx := [][]byte{make([]byte, MaxGROBytes)}
	sizes, segs, from := make([]int, 1), make([]int, 1), make([]netip.AddrPort, 1)
	var deadline atomic.Int64
	for _, c := range []struct {
		name      string
		spin      *atomic.Int64
		until     time.Duration
		wantSpins bool
	}{
		{"no spin", nil, 0, false},
		{"deadline passed", &deadline, -time.Second, false},
		{"spinning", &deadline, 2 * time.Second, true},
	} {
		r.Spin = c.spin
		deadline.Store(time.Now().Add(c.until).UnixNano())
		before := r.Spins.Load()
		// The sender is waited for before the next case's starts: the
		// socket orders their writes for the kernel, not for the race
		// detector, and both use p.a's batch buffers.
		sent := make(chan error, 1)
		go func() {
			time.Sleep(20 * time.Millisecond) // the reader is waiting by then
			_, err := p.a.WriteBatch([][]byte{[]byte("hello")}, 0, []netip.AddrPort{p.b.LocalAddr()})
			sent <- err
		}()
		p.b.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := r.ReadBatch(rx, sizes, segs, 0, from)
		if serr := <-sent; serr != nil {
			t.Fatalf("%s: send: %v", c.name, serr)
		}
		if err != nil || n != 1 || string(rx[0][:sizes[0]]) != "hello" {
			t.Fatalf("%s: ReadBatch = %d, %v", c.name, n, err)
		}
		if spun := r.Spins.Load() > before; spun != c.wantSpins {
			t.Errorf("%s: spun %v (%d retries), want %v", c.name, spun, r.Spins.Load()-before, c.wantSpins)
		}
	}
}

// TestGROReaderWake: a reader parked with its spin deadline passed does not
// spin by itself; Wake after the deadline moved ahead ends its wait, it
// spins, and still returns the datagram that comes later, without a read
// error from the deadline Wake used.
func TestGROReaderWake(t *testing.T) {
	p := newConnPair(t, 8)
	r, err := NewGROReader(p.b, 0)
	if err != nil {
		t.Fatal(err)
	}
	var deadline atomic.Int64
	var idles atomic.Int64
	r.Spin, r.SpinIdle = &deadline, func() { idles.Add(1) }
	rx := [][]byte{make([]byte, MaxGROBytes)}
	sizes, segs, from := make([]int, 1), make([]int, 1), make([]netip.AddrPort, 1)
	done := make(chan error, 1)
	go func() {
		n, err := r.ReadBatch(rx, sizes, segs, 0, from)
		if err == nil && (n != 1 || string(rx[0][:sizes[0]]) != "hello") {
			err = fmt.Errorf("ReadBatch = %d, %q", n, rx[0][:sizes[0]])
		}
		done <- err
	}()
	for i := 0; !r.parked.Load(); i++ {
		if i == 500 {
			t.Fatal("the reader never parked")
		}
		time.Sleep(time.Millisecond)
	}
	if r.Spins.Load() != 0 {
		t.Fatalf("spun %d times with its deadline passed", r.Spins.Load())
	}
	deadline.Store(time.Now().Add(2 * time.Second).UnixNano())
	r.Wake()
	for i := 0; r.Spins.Load() == 0; i++ {
		if i == 500 {
			t.Fatal("Wake did not make the reader spin")
		}
		time.Sleep(time.Millisecond)
	}
	p.a.WriteBatch([][]byte{[]byte("hello")}, 0, []netip.AddrPort{p.b.LocalAddr()})
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no datagram after Wake")
	}
	if idles.Load() == 0 {
		t.Error("SpinIdle never ran while spinning")
	}
}
