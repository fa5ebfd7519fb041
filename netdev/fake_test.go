package netdev

import (
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func frames(n, size int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = make([]byte, size)
		out[i][0] = byte(i)
	}
	return out
}

func TestFakePipe(t *testing.T) {
	tests := []struct {
		name      string
		write     int // frames written before reading
		batch     int
		bufs      int
		wantReads []int // frames per Read
	}{
		{"one", 1, 64, 8, []int{1}},
		{"drain all queued", 5, 64, 8, []int{5}},
		{"limited by buffers", 5, 64, 2, []int{2, 2, 1}},
		{"limited by batch size", 5, 3, 8, []int{3, 2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, b := NewPipeSize("a", "b", 16, 64, tc.batch)
			defer a.Close()
			if n, err := a.Write(frames(tc.write, 60), 0); n != tc.write || err != nil {
				t.Fatalf("Write: %d %v", n, err)
			}
			bufs, sizes := newBatch(tc.bufs, 100)
			next := byte(0)
			for i, want := range tc.wantReads {
				n, err := b.Read(bufs, sizes, 4)
				if n != want || err != nil {
					t.Fatalf("Read #%d: n=%d err=%v, want %d", i, n, err, want)
				}
				for j := range n {
					if sizes[j] != 60 || bufs[j][4] != next {
						t.Fatalf("Read #%d frame %d: size %d first byte %d, want 60 and %d", i, j, sizes[j], bufs[j][4], next)
					}
					next++
				}
			}
		})
	}
}

func TestFakeDirectionsAndTruncation(t *testing.T) {
	a, b := NewPipe()
	defer a.Close()
	if _, err := b.Write([][]byte{make([]byte, 300), make([]byte, 50), {}}, 0); err != nil {
		t.Fatal(err)
	}
	bufs, sizes := newBatch(4, 100)
	n, err := a.Read(bufs, sizes, 0)
	if n != 1 || err != nil || sizes[0] != 50 {
		t.Fatalf("Read: n=%d err=%v size=%d; want the 50-byte frame only", n, err, sizes[0])
	}
	if a.Drops(DropTruncated) != 1 || b.Drops(DropWriteRejected) != 1 {
		t.Errorf("drops: truncated %d, rejected %d; want 1 and 1", a.Drops(DropTruncated), b.Drops(DropWriteRejected))
	}
}

func TestFakeCloseUnblocks(t *testing.T) {
	tests := []struct {
		name  string
		block func(a, b *Fake) error // blocks on a or b
		close func(a, b *Fake)
	}{
		{"read, close self", func(a, b *Fake) error { _, err := a.Read(frames(1, 10), []int{0}, 0); return err }, func(a, b *Fake) { a.Close() }},
		{"read, close peer", func(a, b *Fake) error { _, err := a.Read(frames(1, 10), []int{0}, 0); return err }, func(a, b *Fake) { b.Close() }},
		{"write on full queue", func(a, b *Fake) error { _, err := a.Write(frames(3, 10), 0); return err }, func(a, b *Fake) { b.Close() }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, b := NewPipeSize("a", "b", 2, 16, 8)
			errc := make(chan error, 1)
			go func() { errc <- tc.block(a, b) }()
			time.Sleep(20 * time.Millisecond)
			tc.close(a, b)
			select {
			case err := <-errc:
				if !errors.Is(err, os.ErrClosed) {
					t.Errorf("got %v, want os.ErrClosed", err)
				}
			case <-time.After(ioTimeout):
				t.Fatal("still blocked after Close")
			}
		})
	}
}

func TestFakePeerDrainsAfterClose(t *testing.T) {
	a, b := NewPipe()
	a.Write(frames(2, 10), 0)
	a.Close()
	bufs, sizes := newBatch(4, 64)
	if n, err := b.Read(bufs, sizes, 0); n != 2 || err != nil {
		t.Errorf("first Read after peer Close: n=%d err=%v, want the 2 queued frames", n, err)
	}
	if _, err := b.Read(bufs, sizes, 0); !errors.Is(err, os.ErrClosed) {
		t.Errorf("second Read: %v, want os.ErrClosed", err)
	}
	if _, err := a.Read(bufs, sizes, 0); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Read on the closed end: %v", err)
	}
	if _, err := b.Write(frames(1, 10), 0); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Write to a closed pair: %v", err)
	}
}

func TestFakeAllocs(t *testing.T) {
	a, b := NewPipe()
	defer a.Close()
	out := frames(32, 1500)
	bufs, sizes := newBatch(32, 2048)
	allocs := testing.AllocsPerRun(100, func() {
		a.Write(out, 0)
		b.Read(bufs, sizes, 0)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per Write+Read of 32 frames, want 0", allocs)
	}
}

func BenchmarkFakePipe(b *testing.B) {
	for _, batch := range []int{1, 32} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			x, y := NewPipe()
			defer x.Close()
			out := frames(batch, 1500)
			bufs, sizes := newBatch(batch, 2048)
			b.ReportAllocs()
			b.SetBytes(int64(batch * 1500))
			for b.Loop() {
				x.Write(out, 0)
				for got := 0; got < batch; {
					n, _ := y.Read(bufs, sizes, 0)
					got += n
				}
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "frames/s")
		})
	}
}

// TestFakeVnet: on virtio-header ends a header travels with each frame;
// Read hides it as Tap.Read does (GSO super-frames dropped), WriteVnet
// refuses a GSO type the end did not take, and the read turn is held
// between TryReadVnetTurn and EndTurn.
func TestFakeVnet(t *testing.T) {
	gso := VirtioHdr{Flags: VirtioFlagNeedsCsum, GSOType: GSOTCPv4, GSOSize: 100, HdrLen: 54, CsumStart: 34, CsumOffset: 16}
	frame := make([]byte, 400)
	tests := []struct {
		name        string
		offloads    int
		read        string // "vnet" or "plain"
		wantN       int
		wantDrop    DropReason
		wantDropped uint64
	}{
		{"super-frame whole", unix.TUN_F_CSUM | unix.TUN_F_TSO4, "vnet", 1, DropGSO, 0},
		{"super-frame hidden from Read", unix.TUN_F_CSUM | unix.TUN_F_TSO4, "plain", 0, DropGSO, 1},
		{"no TSO: write refused", unix.TUN_F_CSUM, "vnet", 0, DropWriteRejected, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, b := NewPipe()
			defer a.Close()
			a.SetVnet(tc.offloads)
			b.SetVnet(tc.offloads)
			if _, err := a.WriteVnet([][]byte{frame}, []VirtioHdr{gso}, 0); err != nil {
				t.Fatal(err)
			}
			bufs, sizes := newBatch(4, 1000)
			hdrs := make([]VirtioHdr, 4)
			var n int
			if tc.read == "vnet" {
				if n = b.TryReadVnetTurn(bufs, sizes, hdrs, 0); n > 0 {
					if b.TryReadVnetTurn(bufs, sizes, hdrs, 0) != 0 {
						t.Error("a second reader got the turn while it was held")
					}
					b.EndTurn()
				}
			} else {
				n, _ = b.Read(bufs, sizes, 0)
			}
			if n != tc.wantN {
				t.Fatalf("read %d frames, want %d", n, tc.wantN)
			}
			if n == 1 && (hdrs[0] != gso || sizes[0] != len(frame)) {
				t.Errorf("header %+v size %d", hdrs[0], sizes[0])
			}
			dropped := a.Drops(tc.wantDrop) + b.Drops(tc.wantDrop)
			if dropped != tc.wantDropped {
				t.Errorf("%s drops %d, want %d", tc.wantDrop, dropped, tc.wantDropped)
			}
		})
	}
}

// TestFakeWaitRead: as on a Tap, WaitRead returns once a frame is queued
// and the turn is free, ReadVnetTurnNow reads it (or returns 0 without the
// turn), and a closed pair ends the wait.
func TestFakeWaitRead(t *testing.T) {
	a, b := NewPipe()
	bufs := [][]byte{make([]byte, 128)}
	sizes, hdrs := make([]int, 1), make([]VirtioHdr, 1)
	if n, err := b.ReadVnetTurnNow(bufs, sizes, hdrs, 0); n != 0 || err != nil || !b.turn.TryLock() {
		t.Fatalf("ReadVnetTurnNow on an empty end = %d, %v (or kept the turn)", n, err)
	}
	waited := make(chan error, 1)
	go func() { waited <- b.WaitRead() }() // turn held by the test: waits for it
	if _, err := a.Write([][]byte{[]byte("frame")}, 0); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-waited:
		t.Fatalf("WaitRead returned (%v) while the turn was held", err)
	case <-time.After(20 * time.Millisecond):
	}
	b.turn.Unlock()
	if err := <-waited; err != nil {
		t.Fatalf("WaitRead: %v", err)
	}
	if n, err := b.ReadVnetTurnNow(bufs, sizes, hdrs, 0); n != 1 || err != nil || string(bufs[0][:sizes[0]]) != "frame" {
		t.Fatalf("ReadVnetTurnNow = %d, %v", n, err)
	}
	b.EndTurn()
	go func() { waited <- b.WaitRead() }()
	a.Close()
	if err := <-waited; !errors.Is(err, os.ErrClosed) {
		t.Fatalf("WaitRead after Close: %v, want os.ErrClosed", err)
	}
}
