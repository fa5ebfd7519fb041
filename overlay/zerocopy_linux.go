//go:build linux

package overlay

import (
	"fmt"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// MSG_ZEROCOPY on GSOWriter sends (Linux 4.14; UDP since 5.0).
//
// With SO_ZEROCOPY set and MSG_ZEROCOPY on a send, the kernel pins the
// sender's pages instead of copying them into the socket buffer, and says
// on the socket's error queue when it is done with them (a range of send
// numbers per notification, SO_EE_ORIGIN_ZEROCOPY). Until then the caller
// must not touch the buffers. The data path reuses its buffers as soon as
// WriteGather returns, so a zerocopy send here waits for its completions
// before returning: no goroutine per send and no buffer tracking, at the
// price of waiting for the device to release the pages (on a NIC, the TX
// completion). Documentation/networking/msg_zerocopy.rst: worth it for
// sends above ~10 KB; only GSO messages that large use it.
//
// When the data never reaches a device as pages — a veth, which copies
// zerocopy pages on the way into the other namespace (__dev_forward_skb ->
// skb_orphan_frags), or loopback — the kernel marks the completion
// SO_EE_CODE_ZEROCOPY_COPIED and zerocopy only adds cost: after
// zeroCopyCopiedLimit such completions in a row the writer turns it off
// for good, as the kernel documentation advises.

const (
	// zeroCopyMinBytes: a sendmmsg call uses MSG_ZEROCOPY only when one
	// of its messages carries at least this much.
	zeroCopyMinBytes = 10 << 10
	// zeroCopyCopiedLimit: consecutive copied completions before zerocopy
	// is given up.
	zeroCopyCopiedLimit = 64
	// zeroCopyWait: a send whose completions take longer than this turns
	// zerocopy off for the sends after it. The wait itself goes on until
	// the kernel has released the pages (or the socket fails): returning
	// earlier would let the caller rewrite pages the kernel still reads —
	// over a veth the copy is made only when the peer's receive softirq
	// runs, which a loaded machine can delay by a second.
	zeroCopyWait = 100 * time.Millisecond
)

// zeroCopy is a GSOWriter's MSG_ZEROCOPY state; the writer's one user owns
// it (the stats are atomic for readers elsewhere).
type zeroCopy struct {
	on      bool // SO_ZEROCOPY is set and zerocopy is not given up
	pending int  // zerocopy messages whose completion is not read yet
	copied  int  // consecutive completions the kernel copied anyway
	oob     [128]byte
	msg     unix.Msghdr
	pfd     [1]unix.PollFd
	reapFn  func(fd uintptr)
	stats   *ZeroCopyStats
}

// ZeroCopyStats counts zerocopy sends; writers may share one.
type ZeroCopyStats struct {
	Sent   atomic.Uint64 // messages sent with MSG_ZEROCOPY
	Copied atomic.Uint64 // of those, completed as copied by the kernel
	// GaveUp counts writers that turned zerocopy off: the path copies
	// anyway (veth, loopback), the notification queue was full (ENOBUFS),
	// or completions did not come (zeroCopyWait).
	GaveUp atomic.Uint64
}

// EnableZeroCopy sets SO_ZEROCOPY on the writer's socket: from then on a
// GSO send of zeroCopyMinBytes or more goes with MSG_ZEROCOPY and waits
// for its completion (see above). stats, if not nil, is where the writer
// counts (shared by a node's writers); else it counts in its own. Call it
// before the first send.
func (g *GSOWriter) EnableZeroCopy(stats *ZeroCopyStats) error {
	var serr error
	if err := g.c.rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ZEROCOPY, 1)
	}); err != nil {
		return fmt.Errorf("zerocopy: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("zerocopy: setsockopt SO_ZEROCOPY: %w", serr)
	}
	g.zc.on = true
	if stats == nil {
		stats = new(ZeroCopyStats)
	}
	g.zc.stats = stats
	return nil
}

// ZeroCopy returns the writer's zerocopy counters (nil before
// EnableZeroCopy).
func (g *GSOWriter) ZeroCopy() *ZeroCopyStats { return g.zc.stats }

// ZeroCopyOn reports whether sends still use MSG_ZEROCOPY; only the
// writer's user may call it.
func (g *GSOWriter) ZeroCopyOn() bool { return g.zc.on }

// zeroCopyFlags returns the flags for sending messages [first, k):
// MSG_ZEROCOPY when it is on and one of them is large enough.
func (g *GSOWriter) zeroCopyFlags(first, k int) int {
	if !g.zc.on {
		return 0
	}
	for i := first; i < k; i++ {
		m := &g.msgs[i]
		iov := unsafe.Slice(m.Hdr.Iov, m.Hdr.Iovlen)
		bytes := 0
		for j := range iov {
			bytes += int(iov[j].Len)
		}
		if bytes >= zeroCopyMinBytes {
			return unix.MSG_ZEROCOPY
		}
	}
	return 0
}

// stopOnENOBUFS gives zerocopy up: the socket's notification queue (optmem)
// is full.
func (z *zeroCopy) stopOnENOBUFS() { z.giveUp() }

// giveUp turns zerocopy off for good (the reasons: see ZeroCopyStats.GaveUp).
func (z *zeroCopy) giveUp() {
	if z.on {
		z.on = false
		z.stats.GaveUp.Add(1)
	}
}

// waitZeroCopy waits until the kernel has released the pages of the sent
// zerocopy messages.
func (g *GSOWriter) waitZeroCopy(sent int) {
	z := &g.zc
	z.pending += sent
	z.stats.Sent.Add(uint64(sent))
	if err := g.c.rc.Control(z.reapFn); err != nil {
		z.pending = 0
		z.giveUp()
	}
}

// reapZeroCopy reads completions from fd's error queue until none is
// pending (the RawConn.Control callback of waitZeroCopy).
func (g *GSOWriter) reapZeroCopy(fd uintptr) {
	z := &g.zc
	var deadline time.Time
	for z.pending > 0 {
		z.msg = unix.Msghdr{Control: &z.oob[0]}
		z.msg.SetControllen(len(z.oob))
		_, _, e := unix.Syscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&z.msg)), unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
		switch e {
		case 0:
			z.complete(z.oob[:z.msg.Controllen])
			continue
		case unix.EINTR:
			continue
		case unix.EAGAIN:
		default:
			z.pending = 0
			z.giveUp()
			return
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(zeroCopyWait)
		} else if time.Now().After(deadline) {
			z.giveUp() // for the next sends; these are still waited for
		}
		// POLLERR is reported whatever the events: it means the error
		// queue has something.
		z.pfd[0] = unix.PollFd{Fd: int32(fd)}
		unix.Poll(z.pfd[:], 10)
	}
	if z.copied >= zeroCopyCopiedLimit {
		z.giveUp() // the kernel copies the pages anyway (veth, loopback)
	}
}

// complete accounts one error-queue message: a zerocopy completion covers
// the send numbers [Info, Data].
func (z *zeroCopy) complete(oob []byte) {
	h := unix.CmsgLen(0)
	if len(oob) < h+int(unsafe.Sizeof(unix.SockExtendedErr{})) {
		return
	}
	cm := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	if !(cm.Level == unix.SOL_IP && cm.Type == unix.IP_RECVERR || cm.Level == unix.SOL_IPV6 && cm.Type == unix.IPV6_RECVERR) {
		return
	}
	ee := (*unix.SockExtendedErr)(unsafe.Pointer(&oob[h]))
	if ee.Origin != unix.SO_EE_ORIGIN_ZEROCOPY || ee.Errno != 0 {
		return
	}
	n := int(ee.Data-ee.Info) + 1
	z.pending = max(0, z.pending-n)
	if ee.Code&unix.SO_EE_CODE_ZEROCOPY_COPIED != 0 {
		z.copied += n
		z.stats.Copied.Add(uint64(n))
	} else {
		z.copied = 0
	}
}
