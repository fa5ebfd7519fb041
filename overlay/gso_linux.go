//go:build linux

package overlay

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// UDP segmentation offload (UDP_SEGMENT, Linux 4.18) and receive coalescing
// (UDP_GRO, 5.0) on a Conn's socket.
//
// GSOWriter sends a run of equal-size datagrams to one destination as ONE
// sendmmsg message: the kernel walks its stack once for the run and splits
// it as late as it can (on veth and NICs with UDP segmentation: not at all
// until the wire). GROReader turns on UDP_GRO, so the kernel hands runs of
// datagrams from one sender back as one buffer plus the segment size.
// Both sit beside a Conn and use its socket; they keep their own message
// arrays, so a Conn's ReadBatch/WriteBatch state is untouched. Their
// concurrency rule is the Conn's: one writer and one reader at a time.

const (
	// MaxGSOSegments is the most datagrams one UDP_SEGMENT message may
	// carry (UDP_MAX_SEGMENTS is 64 before Linux 6.9, 128 after; the
	// smaller value works on every kernel).
	MaxGSOSegments = 64
	// MaxGSOBytes is the most UDP payload one UDP_SEGMENT message may carry
	// over IPv4: the 16-bit IP total length less the IPv4 and UDP headers.
	MaxGSOBytes = 0xffff - 20 - 8
	// MaxGROBytes is the largest buffer one UDP_GRO read fills.
	MaxGROBytes = 0xffff
)

// ErrGSOUnsupported is returned by NewGSOWriter and NewGROReader when the
// kernel refuses the socket option.
var ErrGSOUnsupported = errors.New("overlay: UDP GSO/GRO not supported by this kernel")

var (
	cmsgSegSpace = unix.CmsgSpace(2) // UDP_SEGMENT: a uint16
	cmsgGROSpace = unix.CmsgSpace(4) // UDP_GRO: an int
)

// GSOWriter sends runs of datagrams with UDP_SEGMENT. If a send fails with
// EIO (the egress device cannot checksum, or an xfrm policy is in the way)
// it turns GSO off for good and from then on sends every datagram of a run
// as its own message.
type GSOWriter struct {
	c     *Conn
	msgs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet4
	oob   []byte // one cmsgSegSpace slot per message, headers pre-filled
	// gather holds WriteGather's iovecs: up to MaxGSOSegments datagrams
	// per message, two iovecs each (head and tail).
	gather []unix.Iovec

	owner []int32 // the run each prepared message belongs to

	first, n, got int
	flags         int // of the sendmmsg call: MSG_ZEROCOPY or 0
	errno         syscall.Errno
	sendFn        func(fd uintptr) bool
	disabled      atomic.Bool
	zc            zeroCopy // MSG_ZEROCOPY state (zerocopy_linux.go); off unless EnableZeroCopy

	// eioOnGSO makes sends of UDP_SEGMENT messages fail with EIO, as a
	// kernel whose path cannot segment does: for tests of the fallback.
	eioOnGSO bool
}

// NewGSOWriter probes UDP_SEGMENT on c's socket (getsockopt succeeds on
// kernels that know it) and returns a writer carrying up to batch messages
// per sendmmsg (0 means c.BatchSize()).
func NewGSOWriter(c *Conn, batch int) (*GSOWriter, error) {
	if batch <= 0 {
		batch = c.BatchSize()
	}
	if batch > MaxBatchSize {
		return nil, fmt.Errorf("gso writer: batch %d above %d", batch, MaxBatchSize)
	}
	var perr error
	if err := c.rc.Control(func(fd uintptr) {
		_, perr = unix.GetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT)
	}); err != nil {
		return nil, fmt.Errorf("gso writer: %w", err)
	}
	if perr != nil {
		return nil, fmt.Errorf("%w: getsockopt UDP_SEGMENT: %v", ErrGSOUnsupported, perr)
	}
	ms := newMmsgState(batch)
	g := &GSOWriter{
		c:      c,
		msgs:   ms.msgs,
		iovs:   ms.iovs,
		names:  ms.names,
		oob:    make([]byte, batch*cmsgSegSpace),
		owner:  make([]int32, batch),
		gather: make([]unix.Iovec, 2*batch*MaxGSOSegments),
	}
	for i := range g.msgs {
		cm := (*unix.Cmsghdr)(unsafe.Pointer(&g.oob[i*cmsgSegSpace]))
		cm.Level = unix.SOL_UDP
		cm.Type = unix.UDP_SEGMENT
		cm.SetLen(unix.CmsgLen(2))
	}
	g.sendFn = g.sendmmsg
	g.zc.reapFn = g.reapZeroCopy
	return g, nil
}

// Disabled reports whether an EIO turned GSO off.
func (g *GSOWriter) Disabled() bool { return g.disabled.Load() }

// WriteGSO sends bufs[i] to to[i] as a run of datagrams of segSizes[i]
// bytes each (the last may be shorter): one message with UDP_SEGMENT when
// the run holds more than one datagram. A run must hold at most
// MaxGSOSegments datagrams and MaxGSOBytes bytes. It returns how many runs
// were sent whole; if n < len(bufs), err says why run n was not (e.g.
// EMSGSIZE), and the caller may skip it and send the rest. The caller keeps
// ownership of bufs.
func (g *GSOWriter) WriteGSO(bufs [][]byte, segSizes []int, to []netip.AddrPort) (n int, err error) {
	if len(segSizes) < len(bufs) || len(to) < len(bufs) {
		return 0, fmt.Errorf("write gso: %d runs but %d sizes and %d addresses", len(bufs), len(segSizes), len(to))
	}
	next, nextOff := 0, 0 // the run being queued, and how far into it (GSO off)
	for next < len(bufs) {
		k := 0
		for k < len(g.msgs) && next < len(bufs) {
			b, seg := bufs[next], segSizes[next]
			if len(b) == 0 || seg <= 0 || len(b) > MaxGSOBytes || (len(b)+seg-1)/seg > MaxGSOSegments {
				err = fmt.Errorf("write gso: run %d: %d bytes in segments of %d", next, len(b), seg)
			} else if !putSockaddr(&g.names[k], to[next]) {
				err = fmt.Errorf("write gso: destination %v is not IPv4", to[next])
			}
			if err != nil {
				break
			}
			m := &g.msgs[k]
			m.Hdr.Namelen = unix.SizeofSockaddrInet4
			m.Hdr.Iov = &g.iovs[k]
			m.Hdr.SetIovlen(1)
			m.Len = 0
			g.owner[k] = int32(next)
			k++
			if seg >= len(b) || g.disabled.Load() {
				// A single datagram, or GSO is off: one datagram per
				// message, without the control message.
				end := min(nextOff+seg, len(b))
				setIovec(&g.iovs[k-1], b[nextOff:end])
				m.Hdr.Control, m.Hdr.Controllen = nil, 0
				if nextOff = end; nextOff == len(b) {
					nextOff = 0
					next++
				}
				continue
			}
			setIovec(&g.iovs[k-1], b)
			slot := g.oob[(k-1)*cmsgSegSpace : k*cmsgSegSpace]
			*(*uint16)(unsafe.Pointer(&slot[unix.CmsgLen(0)])) = uint16(seg)
			m.Hdr.Control = &slot[0]
			m.Hdr.SetControllen(cmsgSegSpace)
			next++
		}
		if k == 0 {
			return n, err
		}
		sent, serr := g.send(k)
		if serr == nil {
			n = next // runs before next are whole; a run split across calls is not yet
			if err != nil {
				return n, err
			}
			continue
		}
		failed := int(g.owner[sent])
		if errors.Is(serr, unix.EIO) && g.msgs[sent].Hdr.Controllen != 0 && !g.disabled.Load() {
			// The path cannot segment: turn GSO off for good and resend
			// from the failed run on, one datagram per message.
			g.disabled.Store(true)
			n, next, nextOff, err = failed, failed, 0, nil
			continue
		}
		return failed, serr
	}
	return n, err
}

// WriteGather sends every dgrams[i] to to[i] as one datagram, gathering
// runs of consecutive datagrams to one destination, all of one size but a
// shorter last, into single UDP_SEGMENT messages with one iovec per
// datagram part (up to MaxGSOSegments datagrams and MaxGSOBytes each): the
// datagrams need not be adjacent in memory, and the kernel's stack handles
// the run once. With tails (nil, or as long as dgrams), datagram i is
// dgrams[i] followed by tails[i] (empty: nothing), e.g. headers written
// here and a payload left where it was read. It returns how many datagrams
// were sent; if n < len(dgrams), err says why the message holding dgrams[n]
// was not (e.g. EMSGSIZE): the caller may skip dgrams[n] and send the rest.
// With GSO turned off (EIO) every datagram is its own message. The caller
// keeps ownership of dgrams and tails.
func (g *GSOWriter) WriteGather(dgrams, tails [][]byte, to []netip.AddrPort) (n int, err error) {
	if len(to) < len(dgrams) || tails != nil && len(tails) < len(dgrams) {
		return 0, fmt.Errorf("write gather: %d datagrams but %d addresses and %d tails", len(dgrams), len(to), len(tails))
	}
	i := 0
	for i < len(dgrams) {
		k, iv := 0, 0
		for k < len(g.msgs) && i < len(dgrams) {
			seg := gatherLen(dgrams, tails, i)
			if seg == 0 || seg > MaxGSOBytes {
				err = fmt.Errorf("write gather: datagram %d of %d bytes", i, seg)
			} else if !putSockaddr(&g.names[k], to[i]) {
				err = fmt.Errorf("write gather: destination %v is not IPv4", to[i])
			}
			if err != nil {
				break
			}
			j, bytes := i+1, seg
			if !g.disabled.Load() {
				for j < len(dgrams) && j-i < MaxGSOSegments && to[j] == to[i] {
					l := gatherLen(dgrams, tails, j)
					if l == 0 || l > seg || bytes+l > MaxGSOBytes {
						break
					}
					bytes += l
					j++
					if l < seg {
						break // a shorter datagram ends the run
					}
				}
			}
			m := &g.msgs[k]
			m.Hdr.Namelen = unix.SizeofSockaddrInet4
			m.Len = 0
			m.Hdr.Iov = &g.gather[iv]
			first := iv
			for x := i; x < j; x++ {
				if len(dgrams[x]) > 0 {
					setIovec(&g.gather[iv], dgrams[x])
					iv++
				}
				if tails != nil && len(tails[x]) > 0 {
					setIovec(&g.gather[iv], tails[x])
					iv++
				}
			}
			m.Hdr.SetIovlen(iv - first)
			if j-i > 1 {
				slot := g.oob[k*cmsgSegSpace : (k+1)*cmsgSegSpace]
				*(*uint16)(unsafe.Pointer(&slot[unix.CmsgLen(0)])) = uint16(seg)
				m.Hdr.Control = &slot[0]
				m.Hdr.SetControllen(cmsgSegSpace)
			} else {
				m.Hdr.Control, m.Hdr.Controllen = nil, 0
			}
			g.owner[k] = int32(i)
			i = j
			k++
		}
		if k == 0 {
			return n, err
		}
		sent, serr := g.send(k)
		for x := range iv {
			g.gather[x].Base = nil
		}
		if serr == nil {
			n = i
			if err != nil {
				return n, err
			}
			continue
		}
		failed := int(g.owner[sent])
		if errors.Is(serr, unix.EIO) && g.msgs[sent].Hdr.Controllen != 0 && !g.disabled.Load() {
			g.disabled.Store(true)
			n, i, err = failed, failed, nil
			continue
		}
		return failed, serr
	}
	return n, err
}

// gatherLen is datagram i's length: dgrams[i] and, with tails, tails[i].
func gatherLen(dgrams, tails [][]byte, i int) int {
	if tails == nil {
		return len(dgrams[i])
	}
	return len(dgrams[i]) + len(tails[i])
}

// send runs sendmmsg over the first k prepared messages until all went
// out; on an error it returns how many did and the error of the next.
func (g *GSOWriter) send(k int) (int, error) {
	defer g.release(k)
	total := 0
	for total < k {
		g.first, g.n = total, k-total
		if g.eioOnGSO {
			// As the kernel does: what precedes the GSO message goes out,
			// the GSO message itself fails.
			for i := total; i < k; i++ {
				if g.msgs[i].Hdr.Controllen != 0 {
					if i == total {
						return total, os.NewSyscallError("sendmmsg", unix.EIO)
					}
					g.n = i - total
					break
				}
			}
		}
		g.flags = g.zeroCopyFlags(total, k)
		werr := g.c.rc.Write(g.sendFn)
		if werr != nil {
			return total, fmt.Errorf("sendmmsg: %w", werr)
		}
		if g.errno == unix.ENOBUFS && g.flags != 0 {
			g.zc.stopOnENOBUFS()
			continue // the notification queue is full: send these copied
		}
		if g.errno != 0 {
			return total, os.NewSyscallError("sendmmsg", g.errno)
		}
		if g.flags != 0 && g.got > 0 {
			g.waitZeroCopy(g.got)
		}
		if g.got == 0 {
			return total, errors.New("sendmmsg: sent nothing")
		}
		total += g.got
	}
	return total, nil
}

func (g *GSOWriter) sendmmsg(fd uintptr) bool {
	return mmsgFlags(unix.SYS_SENDMMSG, fd, &g.msgs[g.first], g.n, g.flags, &g.got, &g.errno)
}

// release drops the iovecs' pointers into the caller's buffers.
func (g *GSOWriter) release(k int) {
	for i := range k {
		g.iovs[i].Base = nil
	}
}

// GROReader receives with UDP_GRO: a read may return several datagrams of
// one sender coalesced into one buffer, all segSize bytes but the last.
type GROReader struct {
	c     *Conn
	msgs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet4
	oob   []byte

	n, got int
	errno  syscall.Errno
	recvFn func(fd uintptr) bool

	truncated atomic.Uint64

	// Spin, if not nil, is a deadline (Unix ns) until which a read that
	// finds nothing retries at once instead of parking the goroutine:
	// waking a thread from an idle CPU costs tens of µs in a VM (the
	// vCPU halted: an IPI and a VM entry), more than the reply a sender
	// is waiting for takes to come. Whoever expects traffic soon
	// (datapath: a transmitter that just sent to a peer) moves it
	// forward and calls Wake; nil or a past deadline: no spinning. One
	// spell of spinning ends at the deadline it found when it began, so
	// a deadline moved on and on (steady traffic) cannot keep the
	// goroutine off the netpoller for longer than one spin. Set it
	// before the first read.
	Spin *atomic.Int64
	// SpinIdle, if not nil, runs between the retries of a spin: the
	// reader holds its P meanwhile (GOMAXPROCS may be 1), so whatever
	// else the awaited answer depends on must be polled here (datapath:
	// the TAP of the pod that sent). Set it before the first read.
	SpinIdle func()
	// Spins counts the reads retried while spinning.
	Spins atomic.Uint64

	parked atomic.Bool // the reader waits on the netpoller
	kicked atomic.Bool // Wake set a past read deadline to end that wait
}

// aLongTimeAgo is a read deadline in the past: setting it ends a wait on
// the netpoller at once (net/http's trick for the same thing).
var aLongTimeAgo = time.Unix(1, 0)

// Wake makes a reader that waits on the netpoller look again now, so that
// it spins until r.Spin's deadline (which the caller just moved forward).
// A reader that is not parked is left alone: it spins by itself when it
// finds nothing. Cheap when there is nothing to do (one atomic load); safe
// from any goroutine.
func (r *GROReader) Wake() {
	if r.Spin == nil || !r.parked.Load() || !r.kicked.CompareAndSwap(false, true) {
		return
	}
	if err := r.c.uc.SetReadDeadline(aLongTimeAgo); err != nil {
		r.kicked.Store(false) // closed: the read ends by itself
	}
}

// NewGROReader turns UDP_GRO on for c's socket. From then on every read
// from c may be coalesced, so only the GROReader may read c (Conn.ReadBatch
// would see coalesced buffers as one big datagram).
func NewGROReader(c *Conn, batch int) (*GROReader, error) {
	if batch <= 0 {
		batch = c.BatchSize()
	}
	if batch > MaxBatchSize {
		return nil, fmt.Errorf("gro reader: batch %d above %d", batch, MaxBatchSize)
	}
	var serr error
	if err := c.rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_GRO, 1)
	}); err != nil {
		return nil, fmt.Errorf("gro reader: %w", err)
	}
	if serr != nil {
		return nil, fmt.Errorf("%w: setsockopt UDP_GRO: %v", ErrGSOUnsupported, serr)
	}
	ms := newMmsgState(batch)
	r := &GROReader{
		c:     c,
		msgs:  ms.msgs,
		iovs:  ms.iovs,
		names: ms.names,
		oob:   make([]byte, batch*cmsgGROSpace),
	}
	r.recvFn = r.recvmmsg
	return r, nil
}

// Truncated counts reads that did not fit their buffer (size 0 in ReadBatch).
func (r *GROReader) Truncated() uint64 { return r.truncated.Load() }

// ReadBatch is Conn.ReadBatch for a GRO socket: it waits for at least one
// read, then fills up to min(len(bufs), batch) buffers at bufs[i][offset:].
// sizes[i] is the number of bytes read into buffer i and segSizes[i] the
// size of the datagrams coalesced in it (sizes[i] itself when it holds one
// datagram); from[i] (if from is not nil) is the sender. Buffers should hold
// MaxGROBytes past offset, or coalesced reads are truncated (reported with
// size 0 and counted in Truncated).
func (r *GROReader) ReadBatch(bufs [][]byte, sizes, segSizes []int, offset int, from []netip.AddrPort) (int, error) {
	n := min(len(bufs), len(r.msgs))
	if n == 0 {
		return 0, nil
	}
	if len(sizes) < n || len(segSizes) < n || (from != nil && len(from) < n) {
		return 0, fmt.Errorf("read gro batch: %d buffers but %d sizes, %d segment sizes and %d addresses", n, len(sizes), len(segSizes), len(from))
	}
	for i := range n {
		b := bufs[i]
		if offset < 0 || offset > len(b) {
			return 0, fmt.Errorf("read gro batch: offset %d outside buffer %d of length %d", offset, i, len(b))
		}
		setIovec(&r.iovs[i], b[offset:])
		m := &r.msgs[i]
		m.Hdr.Namelen = unix.SizeofSockaddrInet4
		m.Hdr.Flags = 0
		m.Hdr.Control = &r.oob[i*cmsgGROSpace]
		m.Hdr.SetControllen(cmsgGROSpace)
		m.Len = 0
	}
	r.n = n
	err := r.c.rc.Read(r.recvFn)
	for err != nil && r.kicked.Load() && errors.Is(err, os.ErrDeadlineExceeded) {
		// Wake ended the wait: clear its deadline, then let the next
		// Wake in (it sets the deadline again: one more loop), and read.
		if err = r.c.uc.SetReadDeadline(time.Time{}); err != nil {
			break
		}
		r.kicked.Store(false)
		err = r.c.rc.Read(r.recvFn)
	}
	for i := range n {
		r.iovs[i].Base = nil
	}
	if err != nil {
		return 0, fmt.Errorf("recvmmsg: %w", err)
	}
	if r.errno != 0 {
		return 0, os.NewSyscallError("recvmmsg", r.errno)
	}
	for i := range r.got {
		m := &r.msgs[i]
		sizes[i] = int(m.Len)
		segSizes[i] = sizes[i]
		if m.Hdr.Flags&unix.MSG_TRUNC != 0 {
			sizes[i], segSizes[i] = 0, 0
			r.truncated.Add(1)
		} else if s := groSegSize(r.oob[i*cmsgGROSpace:(i+1)*cmsgGROSpace], int(m.Hdr.Controllen)); s > 0 && s < sizes[i] {
			segSizes[i] = s
		}
		if from != nil {
			from[i] = sockaddrAddrPort(&r.names[i])
		}
	}
	return r.got, nil
}

// groSegSize finds the UDP_GRO control message among the first n bytes of
// oob and returns its segment size (0 if there is none).
func groSegSize(oob []byte, n int) int {
	oob = oob[:min(n, len(oob))]
	hdrLen := unix.CmsgLen(0)
	for len(oob) >= hdrLen {
		cm := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(cm.Len)
		if l < hdrLen || l > len(oob) {
			return 0
		}
		if cm.Level == unix.SOL_UDP && cm.Type == unix.UDP_GRO && l >= hdrLen+4 {
			return int(*(*int32)(unsafe.Pointer(&oob[hdrLen])))
		}
		next := unix.CmsgSpace(l - hdrLen)
		if next > len(oob) {
			return 0
		}
		oob = oob[next:]
	}
	return 0
}

func (r *GROReader) recvmmsg(fd uintptr) bool {
	r.parked.Store(false)
	var until int64 // this spell's end, fixed when it begins
	for {
		if mmsg(unix.SYS_RECVMMSG, fd, &r.msgs[0], r.n, &r.got, &r.errno) {
			return true
		}
		if r.Spin == nil {
			return false // park until the netpoller says readable
		}
		now := time.Now().UnixNano()
		if until == 0 {
			until = r.Spin.Load()
		}
		if now >= until {
			r.parked.Store(true)
			return false
		}
		r.Spins.Add(1)
		if r.SpinIdle != nil {
			r.SpinIdle()
		}
	}
}
