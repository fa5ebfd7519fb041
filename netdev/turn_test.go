package netdev

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/testenv"
)

// TestTapReadTurns checks the read turns two readers of one TAP take: the
// pod answers an echo request inside the write that delivers it, so
// TryReadVnetTurn finds the reply at once; while one reader holds the turn
// the other reads nothing, and the turn passes on at EndTurn.
func TestTapReadTurns(t *testing.T) {
	testenv.RequireRoot(t)
	cfg := podTapConfig(newTestNetns(t))
	cfg.VnetHdr = true
	tap := createTestTap(t, cfg)
	bufs, sizes := newBatch(8, 2048)
	checkARP(t, tap, bufs, sizes, 0) // the pod now knows the gateway: replies need no ARP
	hdrs := make([]VirtioHdr, len(bufs))

	ping := func(seq uint16) {
		t.Helper()
		req := echoRequest(make([]byte, 256), tap.MAC(), gwIP, podIP, 0x7745, seq, 56)
		if _, err := tap.Write([][]byte{req}, 0); err != nil {
			t.Fatalf("Write echo request: %v", err)
		}
	}
	isReply := func(n int, seq uint16) bool {
		for i := range n {
			if got, ok := echoReply(bufs[i][:sizes[i]], podIP, 0x7745); ok && got == seq {
				return true
			}
		}
		return false
	}

	if n := tap.TryReadVnetTurn(bufs, sizes, hdrs, 0); n != 0 {
		t.Fatalf("TryReadVnetTurn on an empty TAP = %d frames, want 0", n)
	}
	if !tap.turn.TryLock() {
		t.Fatal("TryReadVnetTurn that read nothing kept the turn")
	}
	tap.turn.Unlock()
	if a := testing.AllocsPerRun(100, func() { tap.TryReadVnetTurn(bufs, sizes, hdrs, 0) }); a != 0 {
		t.Errorf("TryReadVnetTurn allocates %.1f times per call, want 0", a)
	}

	// The reply is queued before Write returns.
	ping(1)
	n := tap.TryReadVnetTurn(bufs, sizes, hdrs, 0)
	if !isReply(n, 1) {
		t.Fatalf("TryReadVnetTurn right after the request: %d frames, no echo reply", n)
	}

	// The owner, blocked in ReadVnetTurn, reads nothing while the turn is
	// held, even with a frame queued; it gets it after EndTurn.
	got := make(chan int, 1)
	errc := make(chan error, 1)
	obufs, osizes := newBatch(8, 2048)
	ohdrs := make([]VirtioHdr, len(obufs))
	go func() {
		n, err := tap.ReadVnetTurn(obufs, osizes, ohdrs, 0)
		if err != nil {
			errc <- err
			return
		}
		got <- n
	}()
	ping(2)
	select {
	case n := <-got:
		t.Fatalf("ReadVnetTurn returned %d frames while another reader held the turn", n)
	case err := <-errc:
		t.Fatalf("ReadVnetTurn: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	if n := tap.TryReadVnetTurn(bufs, sizes, hdrs, 0); n != 0 {
		t.Fatalf("second TryReadVnetTurn read %d frames during a held turn", n)
	}
	tap.EndTurn()
	select {
	case n := <-got:
		found := false
		for i := range n {
			if s, ok := echoReply(obufs[i][:osizes[i]], podIP, 0x7745); ok && s == 2 {
				found = true
			}
		}
		if !found {
			t.Fatalf("owner's ReadVnetTurn after EndTurn: %d frames, no reply 2", n)
		}
	case err := <-errc:
		t.Fatalf("ReadVnetTurn: %v", err)
	case <-time.After(ioTimeout):
		t.Fatal("owner's ReadVnetTurn did not return after EndTurn")
	}

	// The owner now holds the turn: nobody else reads.
	ping(3)
	if n := tap.TryReadVnetTurn(bufs, sizes, hdrs, 0); n != 0 {
		t.Fatalf("TryReadVnetTurn read %d frames while the owner held the turn", n)
	}
	tap.EndTurn()
	if n := tap.TryReadVnetTurn(bufs, sizes, hdrs, 0); !isReply(n, 3) {
		t.Fatalf("TryReadVnetTurn after the owner's EndTurn: %d frames, no reply 3", n)
	}
	tap.EndTurn()

	// A blocked ReadVnetTurn ends with os.ErrClosed on Close, turn free.
	go func() {
		_, err := tap.ReadVnetTurn(obufs, osizes, ohdrs, 0)
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	tap.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, os.ErrClosed) {
			t.Fatalf("ReadVnetTurn after Close: %v, want os.ErrClosed", err)
		}
	case <-time.After(ioTimeout):
		t.Fatal("ReadVnetTurn still blocked after Close")
	}
	if !tap.turn.TryLock() {
		t.Fatal("ReadVnetTurn that failed kept the turn")
	}
	tap.turn.Unlock()
	if n := tap.TryReadVnetTurn(bufs, sizes, hdrs, 0); n != 0 {
		t.Fatalf("TryReadVnetTurn on a closed TAP = %d", n)
	}
}

// TestTapGSOMaxSegs: the cap on super-frame segments reaches the link.
func TestTapGSOMaxSegs(t *testing.T) {
	testenv.RequireRoot(t)
	cfg := podTapConfig(newTestNetns(t))
	cfg.VnetHdr = true
	cfg.GSOMaxSegs = 44
	tap := createTestTap(t, cfg)
	h, err := OpenHandle(cfg.NetnsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	l, err := h.LinkByName(tap.Name())
	if err != nil {
		t.Fatal(err)
	}
	if got := l.Attrs().GSOMaxSegs; got != 44 {
		t.Errorf("gso_max_segs = %d, want 44", got)
	}
	bad := cfg
	bad.GSOMaxSegs = -1
	if _, err := CreateTap(bad); err == nil {
		t.Error("CreateTap accepted gso_max_segs -1")
	}
}
