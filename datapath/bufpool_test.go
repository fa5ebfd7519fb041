package datapath

import (
	"encoding/binary"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/netdev"
)

// TestBufPoolTrim: a set given back stays for the next taker; trim frees
// only the sets no one took during the whole interval since the last trim.
func TestBufPoolTrim(t *testing.T) {
	p := newBufPool(2, 100)
	s1, s2 := p.get(), p.get()
	if len(s1.bufs) != 2 || len(s1.bufs[1]) != 100 || s1 == s2 {
		t.Fatalf("get: %d buffers of %d bytes, distinct %v", len(s1.bufs), len(s1.bufs[1]), s1 != s2)
	}
	p.put(s1)
	p.put(s2)
	if got := p.get(); got != s2 {
		t.Error("get after put did not return the set given back last")
	} else {
		p.put(got)
	}
	if freed := p.trim(); freed != 0 {
		t.Errorf("first trim freed %d bytes of sets in use during the interval, want 0", freed)
	}
	s := p.get() // one set in use during the next interval, one not
	p.put(s)
	if freed := p.trim(); freed != 200 {
		t.Errorf("second trim freed %d bytes, want 200 (the set not taken)", freed)
	}
	if freed := p.trim(); freed != 200 {
		t.Errorf("third trim freed %d bytes, want 200 (the last set, idle since)", freed)
	}
	if p.made.Load() != 2 || p.freed.Load() != 2 || len(p.free) != 0 {
		t.Errorf("made %d freed %d free %d, want 2 2 0", p.made.Load(), p.freed.Load(), len(p.free))
	}
}

// TestTransmitterBuffersOnlyWhileBusy: a transmitter waiting in Run holds
// no buffers; it takes a set for a batch and gives it back, and two idle
// housekeeping ticks free it.
func TestTransmitterBuffersOnlyWhileBusy(t *testing.T) {
	r := newRig(t, modes[2].offloads, false)
	if st := r.dp.BufferStats(); st.Bytes != 0 {
		t.Fatalf("before any traffic the pools hold %d bytes, want 0", st.Bytes)
	}
	done := make(chan error, 1)
	go func() { done <- r.txA.Run() }()
	time.Sleep(20 * time.Millisecond) // Run is waiting
	if st := r.dp.BufferStats(); st.Bytes != 0 {
		t.Fatalf("a waiting transmitter holds %d bytes, want 0", st.Bytes)
	}
	f, _, h := superFrame(t, 60000, 1, 1398, remoteIP)
	toB := udpFrame(podAMAC, routerMAC, podAIP, podBIP, 100, 64)
	if err := writeVnet(r.podA, f, h); err != nil {
		t.Fatal(err)
	}
	if _, err := r.podA.Write([][]byte{toB}, 0); err != nil {
		t.Fatal(err)
	}
	if err := r.podB.WaitRead(); err != nil { // pod B's frame came after the super-frame went out
		t.Fatal(err)
	}
	r.podA.Close() // ends Run, after the batch
	if err := <-done; !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Run: %v, want os.ErrClosed", err)
	}
	st := r.dp.BufferStats()
	if st.Bytes == 0 || st.FreeBytes != st.Bytes {
		t.Fatalf("after the batch: %d bytes, %d free; want some, all free", st.Bytes, st.FreeBytes)
	}
	r.dp.TrimBuffers() // the sets were taken in this interval: kept
	if freed := r.dp.TrimBuffers(); freed != st.Bytes {
		t.Errorf("trim after an idle interval freed %d bytes, want %d", freed, st.Bytes)
	}
	if st := r.dp.BufferStats(); st.Bytes != 0 || st.Made == 0 || st.Freed != st.Made {
		t.Errorf("after trims: %+v, want nothing held", st)
	}
}

// TestTransmitOwnerAndDrainer: the transmitter's own goroutine (Run) and
// a receiver's drains read one TAP at the same time, each with a buffer
// set of its own; every frame is forwarded once, in order.
func TestTransmitOwnerAndDrainer(t *testing.T) {
	const frames = 3000
	r := newRig(t, modes[2].offloads, false)
	done := make(chan error, 1)
	go func() { done <- r.txA.Run() }()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // the drainer
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				r.txA.Transmit(false)
			}
		}
	}()
	go func() { // pod A
		defer wg.Done()
		f := udpFrame(podAMAC, routerMAC, podAIP, podBIP, 100, 64)
		for i := range frames {
			binary.BigEndian.PutUint32(f[len(f)-4:], uint32(i))
			if _, err := r.podA.Write([][]byte{f}, 0); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	bufs := [][]byte{make([]byte, SuperBufSize)}
	sizes, hdrs := make([]int, 1), make([]netdev.VirtioHdr, 1)
	deadline := time.Now().Add(10 * time.Second)
	for got := 0; got < frames; {
		if time.Now().After(deadline) {
			t.Fatalf("pod B got %d of %d frames", got, frames)
		}
		n, err := r.podB.ReadVnetTurnNow(bufs, sizes, hdrs, 0)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			time.Sleep(time.Millisecond)
			continue
		}
		if seq := binary.BigEndian.Uint32(bufs[0][sizes[0]-4 : sizes[0]]); seq != uint32(got) {
			t.Fatalf("frame %d carries %d: out of order or lost", got, seq)
		}
		r.podB.EndTurn()
		got++
	}
	close(stop)
	r.podA.Close()
	wg.Wait()
	<-done
	t.Logf("the drainer forwarded %d of %d frames", r.dp.work.Drained.Load(), frames)
	if st := r.dp.BufferStats(); st.FreeBytes != st.Bytes {
		t.Errorf("after both stopped: %d bytes, %d free; a set was not given back", st.Bytes, st.FreeBytes)
	}
}

// BenchmarkBufPoolGetPut is what a transmitter's batch pays for its
// buffers: one take and one give back.
func BenchmarkBufPoolGetPut(b *testing.B) {
	p := newBufPool(SuperReadBatch, SuperBufSize)
	p.put(p.get())
	b.ReportAllocs()
	for b.Loop() {
		p.put(p.get())
	}
}
