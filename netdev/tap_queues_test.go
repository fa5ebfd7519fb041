package netdev

import (
	"encoding/binary"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/testenv"
	"github.com/weftnet/weft/packet"
)

// newVnetTestTap creates a pod-style virtio-header TAP in a new namespace,
// edit (if not nil) changing its config first; both go when the test ends.
func newVnetTestTap(t *testing.T, edit func(*TapConfig)) (*Tap, TapConfig) {
	t.Helper()
	testenv.RequireRoot(t)
	cfg := podTapConfig(newTestNetns(t))
	cfg.VnetHdr = true
	if edit != nil {
		edit(&cfg)
	}
	return createTestTap(t, cfg), cfg
}

// echoFuncs returns ping, which writes an echo request with id and seq
// from the gateway to the pod behind tap, and isReply, which says whether
// the n frames read into bufs hold the reply to seq.
func echoFuncs(t *testing.T, tap *Tap, id uint16, bufs [][]byte, sizes []int) (ping func(seq uint16), isReply func(n int, seq uint16) bool) {
	ping = func(seq uint16) {
		t.Helper()
		req := echoRequest(make([]byte, 256), tap.MAC(), gwIP, podIP, id, seq, 56)
		if _, err := tap.Write([][]byte{req}, 0); err != nil {
			t.Fatalf("Write echo request: %v", err)
		}
	}
	isReply = func(n int, seq uint16) bool {
		for i := range n {
			if got, ok := echoReply(bufs[i][:sizes[i]], podIP, id); ok && got == seq {
				return true
			}
		}
		return false
	}
	return ping, isReply
}

// TestTapReadTurns checks the read turns two readers of one TAP take: the
// pod answers an echo request inside the write that delivers it, so
// TryReadVnetTurn finds the reply at once; while one reader holds the turn
// the other reads nothing, and the turn passes on at EndTurn.
func TestTapReadTurns(t *testing.T) {
	tap, _ := newVnetTestTap(t, nil)
	bufs, sizes := newBatch(8, 2048)
	checkARP(t, tap, bufs, sizes, 0) // the pod now knows the gateway: replies need no ARP
	hdrs := make([]VirtioHdr, len(bufs))

	ping, isReply := echoFuncs(t, tap, 0x7745, bufs, sizes)

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
	tap, cfg := newVnetTestTap(t, func(c *TapConfig) { c.GSOMaxSegs = 44 })
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

// queueFrame is a frame read from one queue of a multi-queue TAP.
type queueFrame struct {
	queue int
	frame []byte
}

// readQueues reads every queue of qs in its own goroutine until they are
// closed, sending what they read on the returned channel.
func readQueues(t *testing.T, qs []*Tap) <-chan queueFrame {
	t.Helper()
	out := make(chan queueFrame, 256)
	for i, q := range qs {
		go func() {
			bufs, sizes := newBatch(8, 2048)
			for range 10000 {
				n, err := q.Read(bufs, sizes, 0)
				for k := range n {
					out <- queueFrame{i, append([]byte(nil), bufs[k][:sizes[k]]...)}
				}
				if err != nil {
					return
				}
			}
		}()
	}
	return out
}

// TestTapMultiQueue: a TAP with Queues: 2 has two queues; the pod's stack
// spreads its flows over them (here 16 TCP resets from 16 connections), and
// one flow keeps to one queue. Re-attaching in the other queue mode takes
// the device's mode.
func TestTapMultiQueue(t *testing.T) {
	tap, cfg := newVnetTestTap(t, func(c *TapConfig) { c.Queues = 2 })
	qs := tap.Queues()
	if len(qs) != 2 || qs[0] != tap || !qs[1].VnetHdr() || qs[1].Name() != tap.Name() || qs[1].MAC() != tap.MAC() {
		t.Fatalf("Queues() = %d queues (%v), want tap and a second vnet queue of the same device", len(qs), qs)
	}
	frames := readQueues(t, qs)
	wait := func(what string, match func(queueFrame) bool) {
		t.Helper()
		deadline := time.After(ioTimeout)
		for {
			select {
			case f := <-frames:
				if match(f) {
					return
				}
			case <-deadline:
				t.Fatalf("no %s within %v", what, ioTimeout)
			}
		}
	}
	if _, err := qs[1].Write([][]byte{arpRequest(make([]byte, 64), gwMAC, gwIP, podIP)}, 0); err != nil {
		t.Fatal(err)
	}
	wait("ARP reply", func(f queueFrame) bool { _, ok := arpReplyFor(f.frame, podIP); return ok })

	const flows = 16
	for i := range flows {
		syn := putTCP(make([]byte, 128), tap.MAC(), uint16(41000+2*i), 9, 1, 0, packet.TCPFlagSYN, 0, nil)
		if _, err := qs[i%2].Write([][]byte{syn}, 0); err != nil {
			t.Fatal(err)
		}
	}
	perQueue := [2]int{}
	seen := map[uint16]int{}
	for len(seen) < flows {
		wait("TCP reset", func(f queueFrame) bool {
			if len(f.frame) < 14+packet.IPv4MinHdrLen+packet.TCPMinHdrLen || packet.EthType(f.frame) != packet.EtherTypeIPv4 {
				return false
			}
			ip := packet.IPv4(f.frame[14:])
			if ip.Proto() != packet.IPProtoTCP {
				return false
			}
			dport := binary.BigEndian.Uint16(ip.Payload()[2:])
			if q, ok := seen[dport]; ok && q != f.queue {
				t.Errorf("flow %d answered on queue %d and queue %d", dport, q, f.queue)
			}
			seen[dport] = f.queue
			perQueue[f.queue]++
			return true
		})
	}
	if perQueue[0] == 0 || perQueue[1] == 0 {
		t.Errorf("%d flows all answered on one queue: %v", flows, perQueue)
	}
	t.Logf("%d flows: %v per queue", flows, perQueue)
	if err := tap.Close(); err != nil {
		t.Fatal(err)
	}
	if err := qs[1].Close(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("second queue still open after Close: %v", err)
	}

	// The device stays multi-queue: one queue asked, one given, in its mode.
	one := cfg
	one.Queues = 1
	re, err := OpenTap(one)
	if err != nil {
		t.Fatalf("OpenTap with 1 queue on a multi-queue TAP: %v", err)
	}
	if n := len(re.Queues()); n != 1 {
		t.Errorf("re-attached with %d queues, want 1", n)
	}
	re.Close()
	re, err = OpenTap(cfg)
	if err != nil {
		t.Fatalf("OpenTap with 2 queues: %v", err)
	}
	if n := len(re.Queues()); n != 2 {
		t.Errorf("re-attached with %d queues, want 2", n)
	}
	re.Close()

	bad := cfg
	bad.VnetHdr = false
	if _, err := OpenTap(bad); err == nil {
		t.Error("OpenTap accepted 2 queues without VnetHdr")
	}
}

// TestTapSingleQueueKeepsMode: asking a single-queue persistent TAP for two
// queues re-attaches it with one.
func TestTapSingleQueueKeepsMode(t *testing.T) {
	tap, cfg := newVnetTestTap(t, nil)
	tap.Close()
	two := cfg
	two.Queues = 2
	re, err := OpenTap(two)
	if err != nil {
		t.Fatalf("OpenTap with 2 queues on a single-queue TAP: %v", err)
	}
	defer re.Close()
	if n := len(re.Queues()); n != 1 {
		t.Errorf("re-attached with %d queues, want 1 (the device is single-queue)", n)
	}
	bufs, sizes := newBatch(8, 2048)
	checkARP(t, re, bufs, sizes, 0)
}

// TestTapWaitRead checks the owner's wait that lends no buffers: WaitRead
// blocks while the TAP is empty and while another reader holds the read
// turn, returns once a frame waits and the turn is free, and ends with
// os.ErrClosed when the device goes away; ReadVnetTurnNow then reads what
// is there, or returns 0 without the turn.
func TestTapWaitRead(t *testing.T) {
	tap, cfg := newVnetTestTap(t, nil)
	bufs, sizes := newBatch(8, 2048)
	checkARP(t, tap, bufs, sizes, 0)
	hdrs := make([]VirtioHdr, len(bufs))
	ping, isReply := echoFuncs(t, tap, 0x7746, bufs, sizes)
	waited := func() chan error {
		c := make(chan error, 1)
		go func() { c <- tap.WaitRead() }()
		return c
	}
	mustBlock := func(c chan error, why string) {
		t.Helper()
		select {
		case err := <-c:
			t.Fatalf("WaitRead returned (%v) %s", err, why)
		case <-time.After(50 * time.Millisecond):
		}
	}
	mustReturn := func(c chan error, why string) error {
		t.Helper()
		select {
		case err := <-c:
			return err
		case <-time.After(ioTimeout):
			t.Fatalf("WaitRead still blocked %s", why)
		}
		return nil
	}

	if n, err := tap.ReadVnetTurnNow(bufs, sizes, hdrs, 0); n != 0 || err != nil {
		t.Fatalf("ReadVnetTurnNow on an empty TAP = %d, %v; want 0, nil", n, err)
	}
	if !tap.turn.TryLock() {
		t.Fatal("ReadVnetTurnNow that read nothing kept the turn")
	}
	tap.turn.Unlock()
	if a := testing.AllocsPerRun(100, func() { tap.ReadVnetTurnNow(bufs, sizes, hdrs, 0) }); a != 0 {
		t.Errorf("ReadVnetTurnNow allocates %.1f times per call, want 0", a)
	}

	c := waited()
	mustBlock(c, "on an empty TAP")
	ping(1)
	if err := mustReturn(c, "after a frame came"); err != nil {
		t.Fatalf("WaitRead: %v", err)
	}
	n, err := tap.ReadVnetTurnNow(bufs, sizes, hdrs, 0)
	if err != nil || !isReply(n, 1) {
		t.Fatalf("ReadVnetTurnNow after WaitRead: %d frames, %v; no reply 1", n, err)
	}
	tap.EndTurn()

	// Another reader holds the turn: WaitRead waits for it to end.
	ping(2)
	if n := tap.TryReadVnetTurn(bufs, sizes, hdrs, 0); !isReply(n, 2) {
		t.Fatalf("TryReadVnetTurn: %d frames, no reply 2", n)
	}
	ping(3)
	c = waited()
	mustBlock(c, "while another reader held the turn")
	tap.EndTurn()
	if err := mustReturn(c, "after EndTurn"); err != nil {
		t.Fatalf("WaitRead: %v", err)
	}
	if n, err := tap.ReadVnetTurnNow(bufs, sizes, hdrs, 0); err != nil || !isReply(n, 3) {
		t.Fatalf("ReadVnetTurnNow: %d frames, %v; no reply 3", n, err)
	}
	tap.EndTurn()

	// The device goes away under a waiting owner.
	c = waited()
	mustBlock(c, "on an empty TAP")
	if err := DeleteTap(cfg.Name, cfg.NetnsPath); err != nil {
		t.Fatal(err)
	}
	if err := mustReturn(c, "after the device was deleted"); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("WaitRead after delete: %v, want os.ErrClosed", err)
	}
	if err := tap.WaitRead(); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("WaitRead on a deleted TAP: %v, want os.ErrClosed", err)
	}
}
