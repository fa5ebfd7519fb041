package netdev

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/packet"
)

// Tap is an open TAP device (one queue). It implements Device. Create one
// with CreateTap or re-attach to a persistent one with OpenTap.
//
// Without VnetHdr every read and write is one Ethernet frame. With VnetHdr
// each one carries a virtio_net_hdr in front of the frame: Read and Write
// hide it (Read completes NEEDS_CSUM checksums and drops GSO superframes,
// Write sends a zero header), ReadVnet and WriteVnet expose it.
type Tap struct {
	name     string
	nsPath   string
	mac      packet.MAC
	mtu      int
	vnet     bool
	offloads int
	batch    int

	file   *os.File
	rc     syscall.RawConn // from file.SyscallConn, never file.Fd(): Fd turns the fd back to blocking
	closed atomic.Bool

	rd tapReader
	wr tapWriter

	// turn is the read turn of ReadVnetTurn and TryReadVnetTurn; try is
	// the reader state of the latter, which runs beside a blocked rd.
	turn   sync.Mutex
	try    tapReader
	tryCtl func(fd uintptr) // bound once, as rd.fn
	// readyFn is WaitRead's callback, bound once for the same reason.
	readyFn func(fd uintptr) bool

	drops [NumDropReasons]atomic.Uint64

	// queues are the other queues of a multi-queue TAP, opened with this
	// one (TapConfig.Queues) and closed with it.
	queues []*Tap
}

// tapReader is the state of one Read call. The callback handed to RawConn.Read
// is bound once (rd.fn = t.readFrames) and reads its arguments from here:
// a fresh closure per call would escape through the RawConn interface and
// allocate.
type tapReader struct {
	mu     sync.Mutex
	fn     func(fd uintptr) bool
	bufs   [][]byte
	sizes  []int
	hdrs   []VirtioHdr // nil: strip headers (Read); else ReadVnet
	offset int
	max    int
	n      int
	errno  syscall.Errno
	short  bool
	hdr    [VirtioHdrLen]byte
	spare  [1]byte
	iov    [3]unix.Iovec // [virtio hdr] [frame] [spare]

	// takeTurn: take Tap.turn before the first read (ReadVnetTurn);
	// holding: it is taken.
	takeTurn, holding bool
	// noWait: return with nothing instead of parking (ReadVnetTurnNow).
	noWait bool
	// pollErr: WaitRead's poll saw POLLERR (or HUP, NVAL).
	pollErr bool
}

// tapWriter is tapReader's counterpart for Write; same reasons.
type tapWriter struct {
	mu       sync.Mutex
	fn       func(fd uintptr) bool
	gatherFn func(fd uintptr) bool
	bufs     [][]byte
	hdrs     []VirtioHdr // nil: zero header (Write); else WriteVnet
	offset   int
	next     int // index of the next frame to write
	n        int // frames accepted
	errno    syscall.Errno
	hdr      [VirtioHdrLen]byte
	iov      [2]unix.Iovec
	// gather is WriteVnetGather's: [virtio hdr] [part]...; gatherN of
	// them are in use during a call.
	gather  [1 + MaxGatherParts]unix.Iovec
	gatherN int
}

var _ Device = (*Tap)(nil)

func newTap(f *os.File, name, nsPath string, vnet bool, offloads, batch int) (*Tap, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("tap %s: raw conn: %w", name, err)
	}
	if batch <= 0 {
		batch = DefaultBatchSize
	}
	t := &Tap{name: name, nsPath: nsPath, vnet: vnet, offloads: offloads, batch: batch, file: f, rc: rc}
	t.rd.fn = func(fd uintptr) bool { return t.readFrames(&t.rd, fd) }
	t.tryCtl = func(fd uintptr) { t.readFrames(&t.try, fd) }
	t.readyFn = t.readyFrames
	t.wr.fn = t.writeFrames
	t.wr.gatherFn = t.writeGather
	return t, nil
}

// Name is the interface name inside the TAP's namespace.
func (t *Tap) Name() string { return t.name }

// NetnsPath is the namespace path the TAP was opened in ("" = ours).
func (t *Tap) NetnsPath() string { return t.nsPath }

// MAC is the link's hardware address, as read back after configuration.
func (t *Tap) MAC() packet.MAC { return t.mac }

// MTU is the link MTU, as read back after configuration.
func (t *Tap) MTU() int { return t.mtu }

// BatchSize is the most frames one Read returns.
func (t *Tap) BatchSize() int { return t.batch }

// VnetHdr reports whether reads and writes carry a virtio_net_hdr.
func (t *Tap) VnetHdr() bool { return t.vnet }

// Offloads is the TUN_F_* mask the kernel accepted (0 without VnetHdr).
// With TUN_F_TSO4/6 or USO4/6 set, ReadVnet can return GSO superframes.
func (t *Tap) Offloads() int { return t.offloads }

// Drops is the number of frames discarded for reason r.
func (t *Tap) Drops(r DropReason) uint64 {
	if r >= NumDropReasons {
		return 0
	}
	return t.drops[r].Load()
}

// SetReadDeadline makes a blocked or future Read fail with an error wrapping
// os.ErrDeadlineExceeded after tm; the zero time clears it.
func (t *Tap) SetReadDeadline(tm time.Time) error { return t.file.SetReadDeadline(tm) }

// Queues lists the TAP's queues: t itself, then the others of a
// multi-queue TAP (TapConfig.Queues). Each reads and writes on its own.
func (t *Tap) Queues() []*Tap {
	return append([]*Tap{t}, t.queues...)
}

// Close closes this queue's file descriptor, and those of the other queues
// it was opened with, and unblocks blocked Reads, which then return an
// error wrapping os.ErrClosed. A persistent TAP stays in its namespace
// (OpenTap re-attaches; DeleteTap removes it). Closing twice returns an
// error wrapping os.ErrClosed.
func (t *Tap) Close() error {
	if !t.closed.CompareAndSwap(false, true) {
		return fmt.Errorf("close tap %s: %w", t.name, os.ErrClosed)
	}
	var errs []error
	for _, q := range t.queues {
		if err := q.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := t.file.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close tap %s: %w", t.name, err))
	}
	return errors.Join(errs...)
}

// Read implements Device. In VnetHdr mode it strips the virtio header,
// completes NEEDS_CSUM checksums in software, and drops (and counts) GSO
// superframes, which need ReadVnet. Buffers must hold the largest frame
// (MTU + 14, or 64 KiB + headers for GSO): longer frames are dropped as
// DropTruncated.
func (t *Tap) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	return t.read(bufs, sizes, nil, offset)
}

// ReadVnet is Read that also returns each frame's virtio header in hdrs[i]
// and leaves the frame as the kernel gave it: GSO superframes whole,
// NEEDS_CSUM checksums not completed (see FinishChecksum). Headers are
// validated with VirtioHdr.Check; failures are dropped as DropBadVnetHdr.
// Without VnetHdr it returns zero headers.
func (t *Tap) ReadVnet(bufs [][]byte, sizes []int, hdrs []VirtioHdr, offset int) (int, error) {
	if len(hdrs) < len(bufs) {
		bufs = bufs[:len(hdrs)]
	}
	if hdrs == nil {
		hdrs = []VirtioHdr{} // non-nil: selects ReadVnet behaviour; len 0 reads nothing
	}
	return t.read(bufs, sizes, hdrs, offset)
}

func (t *Tap) read(bufs [][]byte, sizes []int, hdrs []VirtioHdr, offset int) (int, error) {
	return t.readTurn(bufs, sizes, hdrs, offset, false, false)
}

// WaitRead blocks until the TAP holds a frame to read and no other reader
// holds its read turn, and reads nothing. A worker waits here holding no
// buffers, and takes them (ReadVnetTurnNow) only when there is something
// to read; another reader may still take the frame first. It fails as Read
// does: after Close, and when the kernel removed the device (poll(2) then
// says POLLERR: tun_chr_poll), with an error wrapping os.ErrClosed.
func (t *Tap) WaitRead() error {
	if t.closed.Load() {
		return fmt.Errorf("read tap %s: %w", t.name, os.ErrClosed)
	}
	r := &t.rd
	r.mu.Lock()
	r.pollErr = false
	err := t.rc.Read(t.readyFn)
	if err != nil && !t.closed.Load() {
		// After POLLERR the runtime refuses to wait on the fd at all
		// ("not pollable"): ask poll(2) whether the device is gone.
		t.rc.Control(func(fd uintptr) { t.readyFrames(fd) })
	}
	gone := r.pollErr
	r.mu.Unlock()
	switch {
	case gone:
		return t.ioError("read", unix.EBADFD)
	case err != nil:
		return t.ioError("read", err)
	}
	// A TryReadVnetTurn that holds the turn is reading the frames now:
	// wait for it, so that the caller's read finds what it left (or
	// nothing) rather than the turn taken.
	t.turn.Lock()
	t.turn.Unlock()
	return nil
}

// readyFrames runs inside RawConn.Read for WaitRead: poll(2) without a
// timeout says whether a frame is queued. false parks the caller on the
// netpoller until the fd turns readable (edge-triggered: a frame that came
// after this poll wakes it), and the runtime asks again. POLLERR (the
// device is gone) ends the wait too.
func (t *Tap) readyFrames(fd uintptr) bool {
	pfd := [1]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	var zero unix.Timespec // a zero timeout never sleeps: a RawSyscall, as readFrames explains
	for {
		r, _, errno := unix.RawSyscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&pfd[0])), 1, uintptr(unsafe.Pointer(&zero)), 0, 0, 0)
		switch {
		case errno == unix.EINTR:
			continue
		case errno != 0:
			return true // the read that follows reports it
		case r == 0:
			return false
		}
		if pfd[0].Revents&(unix.POLLERR|unix.POLLHUP|unix.POLLNVAL) != 0 {
			t.rd.pollErr = true
		}
		return true
	}
}

// ReadVnetTurnNow is ReadVnetTurn that does not wait for frames: it takes
// the read turn (waiting while another reader holds it), reads what the
// TAP holds now and returns 0, nil without the turn when that is nothing.
// With n > 0 and no error the caller holds the turn until EndTurn.
func (t *Tap) ReadVnetTurnNow(bufs [][]byte, sizes []int, hdrs []VirtioHdr, offset int) (int, error) {
	if hdrs == nil {
		hdrs = []VirtioHdr{}
	}
	return t.readTurn(bufs[:min(len(bufs), len(hdrs))], sizes, hdrs, offset, true, true)
}

// ReadVnetTurn is ReadVnet for a TAP that two goroutines drain: the one
// that owns it blocks here, another calls TryReadVnetTurn when it has
// reason to think frames wait (it just wrote to the TAP, and the pod's
// stack answers in the same system call: an ACK, an echo reply, the next
// TCP burst an ACK released). Both read in turns: when ReadVnetTurn returns
// frames (n > 0, err nil) the caller holds the TAP's read turn until it
// calls EndTurn, and neither reader reads meanwhile. Holding the turn from
// read until the frames are sent on keeps the TAP's frames in order however
// the two readers interleave. With an error the turn is not held.
func (t *Tap) ReadVnetTurn(bufs [][]byte, sizes []int, hdrs []VirtioHdr, offset int) (int, error) {
	if hdrs == nil {
		hdrs = []VirtioHdr{}
	}
	return t.readTurn(bufs[:min(len(bufs), len(hdrs))], sizes, hdrs, offset, true, false)
}

// TryReadVnetTurn takes the read turn if it is free and reads what the TAP
// holds now, without waiting. It returns 0 without the turn when the turn
// was taken, nothing was queued, or the read failed (the owner's
// ReadVnetTurn reports failures); with n > 0 the caller holds the turn
// until EndTurn. The buffers are the owner's: only the holder of the turn
// uses them.
func (t *Tap) TryReadVnetTurn(bufs [][]byte, sizes []int, hdrs []VirtioHdr, offset int) int {
	if t.closed.Load() || offset < 0 || !t.turn.TryLock() {
		return 0
	}
	r := &t.try
	r.max = min(len(bufs), len(sizes), len(hdrs), t.batch)
	r.bufs, r.sizes, r.hdrs, r.offset = bufs, sizes, hdrs, offset
	r.n, r.errno, r.short = 0, 0, false
	// Control, not Read: it only holds a reference on the fd, so it runs
	// while the owner is parked in Read; the fd is non-blocking.
	err := t.rc.Control(t.tryCtl)
	n := r.n
	r.bufs, r.sizes, r.hdrs = nil, nil, nil
	if err != nil || n == 0 {
		t.turn.Unlock()
		return 0
	}
	return n
}

// EndTurn gives back the read turn taken by ReadVnetTurn or
// TryReadVnetTurn.
func (t *Tap) EndTurn() { t.turn.Unlock() }

func (t *Tap) readTurn(bufs [][]byte, sizes []int, hdrs []VirtioHdr, offset int, turn, noWait bool) (int, error) {
	if t.closed.Load() {
		return 0, fmt.Errorf("read tap %s: %w", t.name, os.ErrClosed)
	}
	r := &t.rd
	r.mu.Lock()
	defer r.mu.Unlock()
	r.max = min(len(bufs), len(sizes), t.batch)
	if r.max == 0 {
		return 0, nil
	}
	if offset < 0 {
		return 0, fmt.Errorf("read tap %s: %w", t.name, ErrShortBuffer)
	}
	r.bufs, r.sizes, r.hdrs, r.offset = bufs, sizes, hdrs, offset
	r.n, r.errno, r.short = 0, 0, false
	r.takeTurn, r.noWait = turn, noWait
	err := t.rc.Read(r.fn)
	n := r.n
	r.bufs, r.sizes, r.hdrs = nil, nil, nil
	if r.holding {
		// The turn passes to the caller with the frames, or back.
		r.holding = false
		if err != nil || r.short || r.errno != 0 || n == 0 {
			t.turn.Unlock()
		}
	}
	if err != nil {
		return n, t.ioError("read", err)
	}
	if r.short {
		return n, fmt.Errorf("read tap %s: buffer %d: %w", t.name, n, ErrShortBuffer)
	}
	if r.errno != 0 {
		return n, t.ioError("read", r.errno)
	}
	return n, nil
}

// readFrames runs inside RawConn.Read (and, for TryReadVnetTurn, inside
// RawConn.Control, whose result it ignores). It returns false only when
// nothing was delivered and the fd would block (and the caller is willing
// to wait: not ReadVnetTurnNow), which makes the runtime park on the
// netpoller and call it again; otherwise it drains non-blocking
// reads until EAGAIN or a full batch, amortizing one wakeup over a burst.
// A turn-taking read takes the turn before its first read (waiting for a
// TryReadVnetTurn in progress) and gives it back before it parks.
//
// Reads and writes on the TAP are RawSyscalls, not Syscalls: the fd is
// non-blocking (O_NONBLOCK since open, for the netpoller), so no call here
// ever sleeps in the kernel, and the runtime's entersyscall/exitsyscall
// around a Syscall buys nothing. It costs: a write of a 64 KiB GSO frame
// runs the pod's whole receive path (tun_get_user -> netif_rx -> softirq,
// TCP, the socket wakeup) in this thread, often past sysmon's 20 µs
// retake threshold, and sysmon then hands the P to another thread,
// which the scheduler wakes for nothing, while sysmon itself keeps
// polling at its shortest interval because syscalls keep running. The
// Go scheduler cannot run another goroutine on this P meanwhile; that is
// what the fd's non-blocking mode bounds.
func (t *Tap) readFrames(r *tapReader, fd uintptr) bool {
	if r.takeTurn && !r.holding {
		t.turn.Lock()
		r.holding = true
	}
	for r.n < r.max {
		buf := r.bufs[r.n]
		if len(buf) <= r.offset {
			r.short = true
			return true
		}
		buf = buf[r.offset:]
		// The last iovec is one spare byte: tun returns min(frame, room),
		// so a frame longer than buf shows as a read into the spare.
		r.iov[1].Base = &buf[0]
		r.iov[1].SetLen(len(buf))
		r.iov[2].Base = &r.spare[0]
		r.iov[2].SetLen(1)
		iov := r.iov[1:]
		if t.vnet {
			r.iov[0].Base = &r.hdr[0]
			r.iov[0].SetLen(VirtioHdrLen)
			iov = r.iov[:]
		}
		m, _, errno := unix.RawSyscall(unix.SYS_READV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
		r.iov[1].Base = nil // do not pin the caller's buffer
		switch errno {
		case 0:
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			if r.n == 0 && r.holding {
				r.holding = false
				t.turn.Unlock()
			}
			return r.n > 0 || r.noWait
		default:
			r.errno = errno
			return true
		}
		frameLen := int(m)
		if t.vnet {
			frameLen -= VirtioHdrLen
		}
		if frameLen > len(buf) {
			t.drops[DropTruncated].Add(1)
			continue
		}
		if t.vnet && !t.acceptVnet(r, buf[:frameLen]) {
			continue
		}
		if !t.vnet && r.hdrs != nil {
			r.hdrs[r.n] = VirtioHdr{} // ReadVnet on a plain TAP: zero headers
		}
		r.sizes[r.n] = frameLen
		r.n++
	}
	return true
}

// acceptVnet handles the header of a frame read in VnetHdr mode: stores it
// for ReadVnet, or for Read completes the checksum and refuses GSO frames.
func (t *Tap) acceptVnet(r *tapReader, frame []byte) bool {
	var h VirtioHdr
	_ = h.Decode(r.hdr[:]) // r.hdr is VirtioHdrLen long
	if h.Check(len(frame)) != nil {
		t.drops[DropBadVnetHdr].Add(1)
		return false
	}
	if r.hdrs != nil {
		r.hdrs[r.n] = h
		return true
	}
	if h.GSO() != GSONone {
		t.drops[DropGSO].Add(1)
		return false
	}
	if FinishChecksum(frame, &h) != nil { // unreachable after Check; keeps the invariant local
		t.drops[DropBadVnetHdr].Add(1)
		return false
	}
	return true
}

// Write implements Device. In VnetHdr mode every frame gets a zero virtio
// header (a plain, fully checksummed frame).
func (t *Tap) Write(bufs [][]byte, offset int) (int, error) {
	return t.write(bufs, nil, offset)
}

// WriteVnet is Write with a virtio header per frame (hdrs[i] goes with
// bufs[i]), e.g. a GSO superframe coalesced from several segments. It needs
// VnetHdr; frames beyond len(hdrs) are not written.
func (t *Tap) WriteVnet(bufs [][]byte, hdrs []VirtioHdr, offset int) (int, error) {
	if !t.vnet {
		return 0, fmt.Errorf("write tap %s: WriteVnet needs a VnetHdr device", t.name)
	}
	if len(hdrs) < len(bufs) {
		bufs = bufs[:len(hdrs)]
	}
	if hdrs == nil {
		hdrs = []VirtioHdr{}
	}
	return t.write(bufs, hdrs, offset)
}

// WriteVnetGather implements Device: one writev of the virtio header and
// the parts. tun_get_user copies from the iovecs into the skb as it would
// from one buffer, so the frame need not be contiguous here. It needs
// VnetHdr.
func (t *Tap) WriteVnetGather(parts [][]byte, hdr VirtioHdr) (int, error) {
	if !t.vnet {
		return 0, fmt.Errorf("write tap %s: WriteVnetGather needs VnetHdr", t.name)
	}
	if len(parts) > MaxGatherParts {
		return 0, fmt.Errorf("write tap %s: %d parts, at most %d", t.name, len(parts), MaxGatherParts)
	}
	if t.closed.Load() {
		return 0, fmt.Errorf("write tap %s: %w", t.name, os.ErrClosed)
	}
	w := &t.wr
	w.mu.Lock()
	defer w.mu.Unlock()
	_ = hdr.Encode(w.hdr[:])
	w.gather[0].Base = &w.hdr[0]
	w.gather[0].SetLen(VirtioHdrLen)
	k := 1
	for _, p := range parts {
		if len(p) > 0 {
			w.gather[k].Base = &p[0]
			w.gather[k].SetLen(len(p))
			k++
		}
	}
	w.gatherN, w.n, w.errno = k, 0, 0
	n, err := t.runWrite(w.gatherFn)
	for i := 1; i < k; i++ {
		w.gather[i].Base = nil // do not pin the caller's buffers
	}
	return n, err
}

// writeGather runs inside RawConn.Write for WriteVnetGather: one writev
// (a RawSyscall, as readFrames explains), errors sorted as writeFrames
// sorts them.
func (t *Tap) writeGather(fd uintptr) bool {
	w := &t.wr
	for {
		_, _, errno := unix.RawSyscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&w.gather[0])), uintptr(w.gatherN))
		switch errno {
		case 0:
			w.n = 1
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			w.errno = t.countWriteErrno(errno)
		}
		return true
	}
}

// countWriteErrno counts a write the kernel refused for this frame alone
// (malformed: EINVAL, EMSGSIZE, EFAULT; link down: EIO) and returns 0 for
// those, or returns errno, a failure of the device itself.
func (t *Tap) countWriteErrno(errno syscall.Errno) syscall.Errno {
	switch errno {
	case unix.EINVAL, unix.EMSGSIZE, unix.EFAULT:
		t.drops[DropWriteRejected].Add(1)
	case unix.EIO:
		t.drops[DropLinkDown].Add(1)
	default:
		return errno
	}
	return 0
}

func (t *Tap) write(bufs [][]byte, hdrs []VirtioHdr, offset int) (int, error) {
	if t.closed.Load() {
		return 0, fmt.Errorf("write tap %s: %w", t.name, os.ErrClosed)
	}
	if offset < 0 {
		return 0, fmt.Errorf("write tap %s: %w", t.name, ErrShortBuffer)
	}
	w := &t.wr
	w.mu.Lock()
	defer w.mu.Unlock()
	w.bufs, w.hdrs, w.offset = bufs, hdrs, offset
	w.next, w.n, w.errno = 0, 0, 0
	n, err := t.runWrite(w.fn)
	w.bufs, w.hdrs = nil, nil
	return n, err
}

// runWrite runs a write callback (writeFrames, writeGather) inside
// RawConn.Write, with t.wr held and set up, and returns the frames the
// device took and the device's failure, if any.
func (t *Tap) runWrite(fn func(fd uintptr) bool) (int, error) {
	err := t.rc.Write(fn)
	w := &t.wr
	switch {
	case err != nil:
		return w.n, t.ioError("write", err)
	case w.errno != 0:
		return w.n, t.ioError("write", w.errno)
	}
	return w.n, nil
}

// writeFrames runs inside RawConn.Write; it returns false (wait for
// writability, then resume at w.next) only on EAGAIN.
func (t *Tap) writeFrames(fd uintptr) bool {
	w := &t.wr
	for w.next < len(w.bufs) {
		buf := w.bufs[w.next]
		if len(buf) < w.offset {
			buf = nil
		} else {
			buf = buf[w.offset:]
		}
		var errno syscall.Errno
		switch {
		case len(buf) == 0:
			errno = unix.EINVAL
		case t.vnet:
			if w.hdrs != nil {
				_ = w.hdrs[w.next].Encode(w.hdr[:])
			} else {
				w.hdr = [VirtioHdrLen]byte{}
			}
			w.iov[0].Base = &w.hdr[0]
			w.iov[0].SetLen(VirtioHdrLen)
			w.iov[1].Base = &buf[0]
			w.iov[1].SetLen(len(buf))
			_, _, errno = unix.RawSyscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&w.iov[0])), 2)
			w.iov[1].Base = nil
		default:
			_, _, errno = unix.RawSyscall(unix.SYS_WRITE, fd, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)))
		}
		switch errno {
		case 0:
			w.n++
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			if w.errno = t.countWriteErrno(errno); w.errno != 0 {
				return true
			}
		}
		w.next++
	}
	return true
}

// ioError wraps a read/write failure. A closed file and a TAP the kernel
// removed (EBADFD: its namespace was deleted, or DeleteTap ran) both wrap
// os.ErrClosed, so a worker stops on either with one errors.Is check.
func (t *Tap) ioError(op string, err error) error {
	switch {
	case t.closed.Load():
		return fmt.Errorf("%s tap %s: %w", op, t.name, os.ErrClosed)
	case errors.Is(err, unix.EBADFD):
		return fmt.Errorf("%s tap %s: device removed (%w): %w", op, t.name, err, os.ErrClosed)
	}
	return fmt.Errorf("%s tap %s: %w", op, t.name, err)
}
