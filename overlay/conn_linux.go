//go:build linux

package overlay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	// DefaultBatchSize is the number of datagrams one ReadBatch or
	// WriteBatch syscall carries unless ConnConfig says otherwise.
	DefaultBatchSize = 64
	// MaxBatchSize is the kernel's limit on messages per recvmmsg/sendmmsg
	// (UIO_MAXIOV).
	MaxBatchSize = 1024
	// DefaultSocketBuffer is the SO_RCVBUF/SO_SNDBUF size asked for: 7 MiB,
	// as wireguard-go uses (4.08 -> 5.27 Gbit/s and no retransmits in its
	// measurement).
	DefaultSocketBuffer = 7 << 20
)

// ErrOffloadNotImplemented is returned by ListenConn when ConnConfig asks for
// UDP GSO or GRO, which Conn does not do yet.
var ErrOffloadNotImplemented = errors.New("overlay: UDP GSO/GRO not implemented yet")

// ConnConfig configures ListenConn.
type ConnConfig struct {
	// Addr is the local IPv4 address and port to bind. The zero address
	// binds all addresses; port 0 picks an ephemeral port.
	Addr netip.AddrPort
	// BatchSize is the most datagrams one syscall carries (0 means
	// DefaultBatchSize; at most MaxBatchSize). It sizes the Conn's
	// preallocated message arrays.
	BatchSize int
	// SocketBuffer is the SO_RCVBUF and SO_SNDBUF size in bytes (0 means
	// DefaultSocketBuffer, negative leaves the kernel default). The plain
	// option is capped by net.core.[rw]mem_max; the *BUFFORCE variant, which
	// needs CAP_NET_ADMIN, is tried as well. Failures are ignored: read the
	// result with Conn.SocketBuffers.
	SocketBuffer int
	// ReusePort sets SO_REUSEPORT so that several Conns (one per worker)
	// share the port and the kernel spreads flows across them.
	ReusePort bool
	// GSO (UDP_SEGMENT on send) and GRO (UDP_GRO on receive) are the next
	// step; asking for either now fails with ErrOffloadNotImplemented.
	GSO, GRO bool
}

// Conn is a UDP/IPv4 socket on the underlay that sends and receives
// datagrams in batches with raw recvmmsg/sendmmsg, allocation-free, waiting
// in the Go netpoller when there is nothing to do.
//
// The socket sets IP_MTU_DISCOVER=IP_PMTUDISC_DO: every datagram leaves with
// DF, and one too big for the path MTU fails with EMSGSIZE instead of being
// fragmented (weft answers pods with ICMP fragmentation-needed instead).
//
// Source ports: every datagram leaves from the bound port, so unlike a
// full outer frame (bench's outerframe.EncapIPv4) the socket form carries
// no per-flow entropy in the outer UDP source port (Linux peers accept any
// source port). Where the underlay needs it (ECMP, the peer's RSS), give each worker a send-only Conn bound
// to port 0 and steer flows to workers by FlowHash.
//
// Concurrency: a Conn belongs to one worker. ReadBatch and WriteBatch keep
// separate state, so one goroutine may read while another writes, but two
// goroutines must not both read (or both write) at once. Close may be called
// from any goroutine and unblocks a waiting ReadBatch or WriteBatch.
type Conn struct {
	uc    *net.UDPConn
	rc    syscall.RawConn
	batch int
	local netip.AddrPort

	rx, tx mmsgState

	// The RawConn callbacks, bound once: a method value or closure passed
	// to the RawConn interface escapes, so making one per call would
	// allocate per call.
	recvFn, sendFn func(fd uintptr) bool

	truncated atomic.Uint64
}

// mmsgState is one direction's preallocated recvmmsg/sendmmsg arguments and
// the result of the last syscall.
type mmsgState struct {
	msgs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet4
	n     int           // messages offered to the next syscall
	got   int           // messages the last syscall handled
	errno syscall.Errno // its error, 0 if none
}

func newMmsgState(n int) mmsgState {
	s := mmsgState{
		msgs:  make([]unix.Mmsghdr, n),
		iovs:  make([]unix.Iovec, n),
		names: make([]unix.RawSockaddrInet4, n),
	}
	for i := range s.msgs {
		h := &s.msgs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&s.names[i]))
		h.Namelen = unix.SizeofSockaddrInet4
		h.Iov = &s.iovs[i]
		h.SetIovlen(1)
	}
	return s
}

// ListenConn opens a Conn in the network namespace of the calling thread
// (the socket stays there even after the thread moves).
func ListenConn(ctx context.Context, cfg ConnConfig) (*Conn, error) {
	if cfg.GSO || cfg.GRO {
		return nil, fmt.Errorf("listen udp %v: gso=%v gro=%v: %w", cfg.Addr, cfg.GSO, cfg.GRO, ErrOffloadNotImplemented)
	}
	if a := cfg.Addr.Addr(); a.IsValid() && !a.Is4() && !a.Is4In6() {
		return nil, fmt.Errorf("listen udp %v: the underlay is IPv4", cfg.Addr)
	}
	batch := cfg.BatchSize
	if batch == 0 {
		batch = DefaultBatchSize
	}
	if batch < 1 || batch > MaxBatchSize {
		return nil, fmt.Errorf("listen udp %v: batch size %d outside [1, %d]", cfg.Addr, batch, MaxBatchSize)
	}
	bind := netip.AddrPortFrom(cfg.Addr.Addr().Unmap(), cfg.Addr.Port())
	if !bind.Addr().IsValid() {
		bind = netip.AddrPortFrom(netip.IPv4Unspecified(), cfg.Addr.Port())
	}
	lc := net.ListenConfig{Control: cfg.control}
	pc, err := lc.ListenPacket(ctx, "udp4", bind.String())
	if err != nil {
		return nil, fmt.Errorf("listen udp %v: %w", bind, err)
	}
	uc := pc.(*net.UDPConn)
	rc, err := uc.SyscallConn()
	if err != nil {
		uc.Close()
		return nil, fmt.Errorf("listen udp %v: %w", bind, err)
	}
	c := &Conn{
		uc:    uc,
		rc:    rc,
		batch: batch,
		local: uc.LocalAddr().(*net.UDPAddr).AddrPort(),
		rx:    newMmsgState(batch),
		tx:    newMmsgState(batch),
	}
	c.recvFn = c.recvmmsg
	c.sendFn = c.sendmmsg
	return c, nil
}

// control sets the socket options before bind.
func (cfg *ConnConfig) control(_, _ string, raw syscall.RawConn) error {
	var err error
	cerr := raw.Control(func(fd uintptr) {
		s := int(fd)
		if cfg.ReusePort {
			if err = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
				err = fmt.Errorf("set SO_REUSEPORT: %w", err)
				return
			}
		}
		if size := cfg.SocketBuffer; size >= 0 {
			if size == 0 {
				size = DefaultSocketBuffer
			}
			// Plain first (capped by [rw]mem_max), then FORCE, which
			// succeeds only with CAP_NET_ADMIN; either may fail.
			_ = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_RCVBUF, size)
			_ = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size)
			_ = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_SNDBUF, size)
			_ = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, size)
		}
		if err = unix.SetsockoptInt(s, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO); err != nil {
			err = fmt.Errorf("set IP_MTU_DISCOVER: %w", err)
		}
	})
	if cerr != nil {
		return cerr
	}
	return err
}

// LocalAddr returns the bound address and port.
func (c *Conn) LocalAddr() netip.AddrPort { return c.local }

// BatchSize returns the most datagrams one syscall carries.
func (c *Conn) BatchSize() int { return c.batch }

// SocketBuffers returns the receive and send buffer sizes the kernel
// granted (getsockopt reports twice the usable size, as the kernel doubles
// the request for bookkeeping).
func (c *Conn) SocketBuffers() (rcv, snd int, err error) {
	cerr := c.rc.Control(func(fd uintptr) {
		if rcv, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF); err != nil {
			return
		}
		snd, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF)
	})
	if cerr != nil {
		return 0, 0, cerr
	}
	return rcv, snd, err
}

// Truncated returns how many received datagrams did not fit their buffer
// (reported with size 0 by ReadBatch).
func (c *Conn) Truncated() uint64 { return c.truncated.Load() }

// SetReadDeadline sets the deadline for ReadBatch, as net.Conn does.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.uc.SetReadDeadline(t) }

// SetWriteDeadline sets the deadline for WriteBatch, as net.Conn does.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.uc.SetWriteDeadline(t) }

// Close closes the socket and unblocks any ReadBatch or WriteBatch waiting
// on it; they return an error matching net.ErrClosed.
func (c *Conn) Close() error { return c.uc.Close() }

// ReadBatch waits for at least one datagram, then receives up to
// min(len(bufs), BatchSize()) datagrams, each into bufs[i][offset:]. It
// returns the number n received; for i < n, sizes[i] is the datagram's length
// and, if from is not nil, from[i] its sender. A datagram longer than its
// buffer is reported with size 0 and counted in Truncated. sizes (and from,
// if not nil) must be at least as long as the batch.
//
// The caller keeps ownership of bufs; Conn keeps no reference to them after
// ReadBatch returns.
func (c *Conn) ReadBatch(bufs [][]byte, sizes []int, offset int, from []netip.AddrPort) (n int, err error) {
	n = min(len(bufs), c.batch)
	if n == 0 {
		return 0, nil
	}
	if len(sizes) < n || (from != nil && len(from) < n) {
		return 0, fmt.Errorf("read batch: %d buffers but %d sizes and %d addresses", n, len(sizes), len(from))
	}
	s := &c.rx
	for i := 0; i < n; i++ {
		b := bufs[i]
		if offset < 0 || offset > len(b) {
			return 0, fmt.Errorf("read batch: offset %d outside buffer %d of length %d", offset, i, len(b))
		}
		setIovec(&s.iovs[i], b[offset:])
		s.msgs[i].Hdr.Namelen = unix.SizeofSockaddrInet4
		s.msgs[i].Hdr.Flags = 0
		s.msgs[i].Len = 0
	}
	s.n = n
	err = c.rc.Read(c.recvFn)
	s.release()
	if err != nil {
		return 0, fmt.Errorf("recvmmsg: %w", err)
	}
	if s.errno != 0 {
		return 0, os.NewSyscallError("recvmmsg", s.errno)
	}
	for i := 0; i < s.got; i++ {
		m := &s.msgs[i]
		sizes[i] = int(m.Len)
		if m.Hdr.Flags&unix.MSG_TRUNC != 0 {
			sizes[i] = 0
			c.truncated.Add(1)
		}
		if from != nil {
			from[i] = sockaddrAddrPort(&s.names[i])
		}
	}
	return s.got, nil
}

// WriteBatch sends bufs[i][offset:] to to[i] for every i, in as few
// sendmmsg calls as the batch size allows, waiting when the socket buffer is
// full. It returns the number n of datagrams sent; if n < len(bufs), err says
// why bufs[n] was not sent (for example EMSGSIZE for a datagram too big for
// the path MTU, or a destination that is not IPv4), and the caller decides
// whether to skip it and send bufs[n+1:]. to must be at least as long as
// bufs.
func (c *Conn) WriteBatch(bufs [][]byte, offset int, to []netip.AddrPort) (n int, err error) {
	if len(to) < len(bufs) {
		return 0, fmt.Errorf("write batch: %d buffers but %d addresses", len(bufs), len(to))
	}
	s := &c.tx
	for n < len(bufs) {
		k := min(len(bufs)-n, c.batch)
		for i := 0; i < k; i++ {
			b := bufs[n+i]
			if offset < 0 || offset > len(b) {
				err = fmt.Errorf("write batch: offset %d outside buffer %d of length %d", offset, n+i, len(b))
			} else if !putSockaddr(&s.names[i], to[n+i]) {
				err = fmt.Errorf("write batch: destination %v is not IPv4", to[n+i])
			}
			if err != nil {
				k = i // send those before the bad one, then report it
				break
			}
			setIovec(&s.iovs[i], b[offset:])
			s.msgs[i].Hdr.Namelen = unix.SizeofSockaddrInet4
			s.msgs[i].Len = 0
		}
		if k == 0 {
			return n, err
		}
		s.n = k
		werr := c.rc.Write(c.sendFn)
		s.release()
		if werr != nil {
			return n, fmt.Errorf("sendmmsg: %w", werr)
		}
		if s.errno != 0 {
			return n, os.NewSyscallError("sendmmsg", s.errno)
		}
		if s.got == 0 {
			return n, fmt.Errorf("sendmmsg: sent none of %d datagrams: %w", k, io.ErrShortWrite)
		}
		n += s.got
	}
	return n, err
}

// recvmmsg is the RawConn.Read callback: false asks the netpoller to wait
// for readability and call again.
func (c *Conn) recvmmsg(fd uintptr) bool {
	return mmsg(unix.SYS_RECVMMSG, fd, &c.rx.msgs[0], c.rx.n, &c.rx.got, &c.rx.errno)
}

// sendmmsg is the RawConn.Write callback.
func (c *Conn) sendmmsg(fd uintptr) bool {
	return mmsg(unix.SYS_SENDMMSG, fd, &c.tx.msgs[0], c.tx.n, &c.tx.got, &c.tx.errno)
}

// mmsg makes one recvmmsg or sendmmsg (trap) over the n messages at msgs,
// retrying on EINTR, and stores how many went through and the error. It
// returns false on EAGAIN, leaving got and errno alone: a RawConn callback
// then tells the netpoller to wait and call again. Every callback of this
// package (Conn, GSOWriter, GROReader) goes through here.
func mmsg(trap, fd uintptr, msgs *unix.Mmsghdr, n int, got *int, errno *syscall.Errno) bool {
	return mmsgFlags(trap, fd, msgs, n, 0, got, errno)
}

// mmsgFlags is mmsg with flags for the call (sendmmsg: MSG_ZEROCOPY).
//
// The call is a RawSyscall: the socket is non-blocking (it came from the
// net package), so it never sleeps, and the runtime's entersyscall/
// exitsyscall bookkeeping around it is pure cost. Worse, a Syscall that
// takes longer than sysmon's 20 µs tick (a 64 KiB GSO send runs the whole
// veth, bridge and receiving stack in this thread's softirq) lets sysmon
// hand this P to another thread, waking it for nothing, and keeps sysmon
// itself polling at its shortest interval. netdev's TAP I/O does the
// same (netdev's Tap.readFrames says more).
func mmsgFlags(trap, fd uintptr, msgs *unix.Mmsghdr, n, flags int, got *int, errno *syscall.Errno) bool {
	for {
		r, _, e := unix.RawSyscall6(trap, fd, uintptr(unsafe.Pointer(msgs)), uintptr(n), uintptr(flags), 0, 0)
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		case 0:
			*got, *errno = int(r), 0
		default:
			*got, *errno = 0, e
		}
		return true
	}
}

// release drops the iovecs' pointers into the caller's buffers, so that a
// Conn never keeps a buffer its owner has let go of alive.
func (s *mmsgState) release() {
	for i := range s.n {
		s.iovs[i].Base = nil
	}
}

func setIovec(iov *unix.Iovec, b []byte) {
	if len(b) == 0 {
		iov.Base = nil
		iov.SetLen(0)
		return
	}
	iov.Base = &b[0]
	iov.SetLen(len(b))
}

// sockaddrAddrPort converts a kernel-filled sockaddr_in; sin_port is in
// network byte order.
func sockaddrAddrPort(sa *unix.RawSockaddrInet4) netip.AddrPort {
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(p[0])<<8|uint16(p[1]))
}

func putSockaddr(sa *unix.RawSockaddrInet4, ap netip.AddrPort) bool {
	a := ap.Addr()
	if !a.Is4() && !a.Is4In6() {
		return false
	}
	sa.Family = unix.AF_INET
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	p[0], p[1] = byte(ap.Port()>>8), byte(ap.Port())
	sa.Addr = a.As4()
	return true
}
