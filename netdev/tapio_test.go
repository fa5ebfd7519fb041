package netdev

import (
	"errors"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/testenv"
)

// TestTapReadDrainsBatch queues several kernel replies before reading: one
// Read must return more than one of them.
func TestTapReadDrainsBatch(t *testing.T) {
	testenv.RequireRoot(t)
	for _, vnet := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "vnet"}[vnet], func(t *testing.T) {
			cfg := podTapConfig(newTestNetns(t))
			cfg.VnetHdr = vnet
			cfg.BatchSize = 16
			tap := createTestTap(t, cfg)
			bufs, sizes := newBatch(16, 2048)
			checkPing(t, tap, bufs, sizes, 0, 1) // neighbour entry for the gateway now exists

			const count = 8
			reqs := make([][]byte, count)
			for i := range reqs {
				reqs[i] = echoRequest(make([]byte, 256), tap.MAC(), gwIP, podIP, 0x7744, uint16(100+i), 56)
			}
			// tun delivers a written frame to the stack synchronously, so
			// every reply is queued on the TAP when Write returns.
			if n, err := tap.Write(reqs, 0); n != count || err != nil {
				t.Fatalf("Write: n=%d err=%v", n, err)
			}
			seen := map[uint16]bool{}
			maxBatch := 0
			tap.SetReadDeadline(time.Now().Add(ioTimeout))
			for reads := 0; len(seen) < count && reads < 100; reads++ {
				n, err := tap.Read(bufs, sizes, 0)
				if err != nil {
					t.Fatalf("Read after %d replies: %v", len(seen), err)
				}
				maxBatch = max(maxBatch, n)
				for i := range n {
					if seq, ok := echoReply(bufs[i][:sizes[i]], podIP, 0x7744); ok {
						seen[seq] = true
					}
				}
			}
			if len(seen) != count {
				t.Fatalf("got %d of %d echo replies", len(seen), count)
			}
			if maxBatch < 2 {
				t.Errorf("largest Read returned %d frame(s); want the queued replies drained together", maxBatch)
			}
		})
	}
}

// TestTapBatchSizeCapsRead: a Read never returns more than BatchSize frames
// even with more buffers and more frames queued.
func TestTapBatchSizeCapsRead(t *testing.T) {
	testenv.RequireRoot(t)
	cfg := podTapConfig(newTestNetns(t))
	cfg.BatchSize = 2
	tap := createTestTap(t, cfg)
	bufs, sizes := newBatch(8, 2048)
	checkPing(t, tap, bufs, sizes, 0, 1)
	reqs := make([][]byte, 4)
	for i := range reqs {
		reqs[i] = echoRequest(make([]byte, 256), tap.MAC(), gwIP, podIP, 0x7744, uint16(10+i), 8)
	}
	if _, err := tap.Write(reqs, 0); err != nil {
		t.Fatal(err)
	}
	tap.SetReadDeadline(time.Now().Add(ioTimeout))
	total := 0
	for total < len(reqs) {
		n, err := tap.Read(bufs, sizes, 0)
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		if n > tap.BatchSize() {
			t.Fatalf("Read returned %d frames, BatchSize %d", n, tap.BatchSize())
		}
		total += n
	}
}

func TestTapReadUnblocksOnClose(t *testing.T) {
	testenv.RequireRoot(t)
	for _, vnet := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "vnet"}[vnet], func(t *testing.T) {
			cfg := podTapConfig(newTestNetns(t))
			cfg.VnetHdr = vnet
			tap := createTestTap(t, cfg)
			errc := make(chan error, 1)
			go func() {
				bufs, sizes := newBatch(4, 2048)
				for {
					// The quiet pod may still send something; keep reading.
					if _, err := tap.Read(bufs, sizes, 0); err != nil {
						errc <- err
						return
					}
				}
			}()
			time.Sleep(50 * time.Millisecond) // let Read park on the netpoller
			if err := tap.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			select {
			case err := <-errc:
				if !errors.Is(err, os.ErrClosed) {
					t.Errorf("Read after Close: %v, want os.ErrClosed", err)
				}
			case <-time.After(ioTimeout):
				t.Fatal("Read still blocked after Close")
			}
			if _, err := tap.Write([][]byte{make([]byte, 60)}, 0); !errors.Is(err, os.ErrClosed) {
				t.Errorf("Write after Close: %v, want os.ErrClosed", err)
			}
			if err := tap.Close(); !errors.Is(err, os.ErrClosed) {
				t.Errorf("second Close: %v, want os.ErrClosed", err)
			}
		})
	}
}

// TestTapReadEndsWhenDeviceRemoved: deleting the TAP (as a deleted pod
// namespace does) ends a blocked Read with os.ErrClosed.
func TestTapReadEndsWhenDeviceRemoved(t *testing.T) {
	testenv.RequireRoot(t)
	cfg := podTapConfig(newTestNetns(t))
	tap := createTestTap(t, cfg)
	errc := make(chan error, 1)
	go func() {
		bufs, sizes := newBatch(4, 2048)
		for {
			if _, err := tap.Read(bufs, sizes, 0); err != nil {
				errc <- err
				return
			}
		}
	}()
	time.Sleep(50 * time.Millisecond)
	if err := DeleteTap(cfg.Name, cfg.NetnsPath); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("Read after delete: %v, want os.ErrClosed", err)
		}
	case <-time.After(ioTimeout):
		t.Fatal("Read still blocked after the device was deleted")
	}
}

func TestTapWriteDropsRejectedFrames(t *testing.T) {
	testenv.RequireRoot(t)
	cfg := podTapConfig(newTestNetns(t))
	tap := createTestTap(t, cfg)
	good := arpRequest(make([]byte, 64), gwMAC, gwIP, podIP)
	n, err := tap.Write([][]byte{make([]byte, 6), good, {}}, 0)
	if n != 1 || err != nil {
		t.Errorf("Write: n=%d err=%v, want 1 written and no error", n, err)
	}
	if got := tap.Drops(DropWriteRejected); got != 2 {
		t.Errorf("DropWriteRejected = %d, want 2", got)
	}
}

func TestTapReadTruncated(t *testing.T) {
	testenv.RequireRoot(t)
	cfg := podTapConfig(newTestNetns(t))
	tap := createTestTap(t, cfg)
	bufs, sizes := newBatch(4, 2048)
	checkPing(t, tap, bufs, sizes, 0, 1)
	req := echoRequest(make([]byte, 1500), tap.MAC(), gwIP, podIP, 0x7744, 9, 1000)
	if _, err := tap.Write([][]byte{req}, 0); err != nil {
		t.Fatal(err)
	}
	small, sizes := newBatch(4, 200)
	tap.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	for range 10 {
		if _, err := tap.Read(small, sizes, 0); err != nil {
			break
		}
	}
	if tap.Drops(DropTruncated) == 0 {
		t.Error("a 1042-byte reply read into 200-byte buffers was not counted as truncated")
	}
}

// TestTapFdFlags: the fd is non-blocking (served by the netpoller) and
// close-on-exec (a child process must not keep the TAP attached) in both
// modes; water alone would leave it inheritable.
func TestTapFdFlags(t *testing.T) {
	testenv.RequireRoot(t)
	for _, vnet := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "vnet"}[vnet], func(t *testing.T) {
			cfg := podTapConfig(newTestNetns(t))
			cfg.VnetHdr = vnet
			tap := createTestTap(t, cfg)
			var fdFlags, flFlags int
			var ferr, lerr error
			if err := tap.rc.Control(func(fd uintptr) {
				fdFlags, ferr = unix.FcntlInt(fd, unix.F_GETFD, 0)
				flFlags, lerr = unix.FcntlInt(fd, unix.F_GETFL, 0)
			}); err != nil || ferr != nil || lerr != nil {
				t.Fatal(err, ferr, lerr)
			}
			if fdFlags&unix.FD_CLOEXEC == 0 || flFlags&unix.O_NONBLOCK == 0 {
				t.Errorf("fd flags %#x status %#x: want FD_CLOEXEC and O_NONBLOCK", fdFlags, flFlags)
			}
		})
	}
}
