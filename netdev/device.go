package netdev

import "errors"

// Device is a batch-oriented frame device (the shape of wireguard-go's
// tun.Device). The caller owns every buffer; a device never keeps a
// reference to one after the call returns.
//
// Read and Write may run at the same time on different goroutines; two
// concurrent Reads (or two concurrent Writes) on one Device are serialized.
type Device interface {
	// Name is the interface name (as seen inside its namespace).
	Name() string
	// Read blocks until at least one frame is available, then fills
	// bufs[i][offset:] with up to min(len(bufs), len(sizes), BatchSize())
	// frames without blocking again, setting sizes[i] to each frame's
	// length. It returns the number of frames filled. On error the first n
	// frames are still valid. After Close, and when the kernel has removed
	// the device, the error wraps os.ErrClosed (the os one, not
	// net.ErrClosed): stop on errors.Is(err, os.ErrClosed).
	Read(bufs [][]byte, sizes []int, offset int) (n int, err error)
	// Write sends the frames bufs[i][offset:] and returns how many the
	// device accepted. Frames the device rejects one by one (malformed, link
	// down) are counted as drops and skipped without an error; an error
	// means the device itself failed (after Close it wraps os.ErrClosed).
	Write(bufs [][]byte, offset int) (n int, err error)
	// BatchSize is the most frames one Read returns; it never changes.
	BatchSize() int
	// Close releases the device and unblocks a blocked Read or Write.
	Close() error
	// Drops is the number of frames the device discarded for reason r.
	Drops(r DropReason) uint64

	// VnetHdr reports whether frames carry a virtio_net_hdr (IFF_VNET_HDR).
	VnetHdr() bool
	// Offloads is the TUN_F_* mask the device accepted (0 without VnetHdr):
	// with TUN_F_TSO4/6 or USO4/6 set, ReadVnet can return GSO super-frames
	// and WriteVnet takes them.
	Offloads() int
	// ReadVnet is Read that also returns each frame's virtio header in
	// hdrs[i] and leaves the frame as the kernel gave it (GSO super-frames
	// whole, NEEDS_CSUM checksums not completed). Without VnetHdr every
	// header is zero.
	ReadVnet(bufs [][]byte, sizes []int, hdrs []VirtioHdr, offset int) (n int, err error)
	// WriteVnet is Write with a virtio header per frame; it needs VnetHdr.
	WriteVnet(bufs [][]byte, hdrs []VirtioHdr, offset int) (n int, err error)
	// WriteVnetGather writes ONE frame, the concatenation of parts (at
	// most MaxGatherParts), with virtio header hdr, as WriteVnet writes
	// one: n is 1 if the device took it, 0 if it refused it (counted).
	// The parts are gathered by the kernel (writev), not copied first: a
	// coalesced run of segments goes out from the buffers they came in.
	WriteVnetGather(parts [][]byte, hdr VirtioHdr) (n int, err error)
	// ReadVnetTurn, TryReadVnetTurn and EndTurn let two goroutines drain
	// one device in turns: the owner blocks in ReadVnetTurn, another calls
	// TryReadVnetTurn; whoever gets frames holds the read turn (and the
	// buffers the owner lent) until EndTurn (see Tap.ReadVnetTurn).
	ReadVnetTurn(bufs [][]byte, sizes []int, hdrs []VirtioHdr, offset int) (n int, err error)
	TryReadVnetTurn(bufs [][]byte, sizes []int, hdrs []VirtioHdr, offset int) int
	EndTurn()
	// WaitRead and ReadVnetTurnNow let the owner wait without lending
	// buffers: WaitRead blocks until a frame is queued and the read turn
	// is free, reading nothing; ReadVnetTurnNow is ReadVnetTurn that
	// returns 0, nil (turn not held) instead of waiting when nothing is
	// queued, e.g. because another reader took the frames first.
	WaitRead() error
	ReadVnetTurnNow(bufs [][]byte, sizes []int, hdrs []VirtioHdr, offset int) (n int, err error)
}

// DefaultBatchSize is the Read batch a Tap or Fake uses when none is given.
const DefaultBatchSize = 64

// MaxGatherParts is the most parts one WriteVnetGather takes: one iovec
// each, plus the virtio header's, far below the kernel's UIO_MAXIOV (1024).
const MaxGatherParts = 128

// DropReason says why a device discarded a frame. Each reason has its own
// counter (Tap.Drops, Fake.Drops).
type DropReason uint8

const (
	// DropGSO: Read met a GSO superframe (TSO/USO) that it cannot hand out
	// whole without its virtio header; ReadVnet returns such frames.
	DropGSO DropReason = iota
	// DropBadVnetHdr: the kernel's virtio_net_hdr failed validation (bad
	// flags, unknown GSO type, checksum offsets outside the frame).
	DropBadVnetHdr
	// DropTruncated: the frame was longer than the caller's buffer.
	DropTruncated
	// DropWriteRejected: the kernel refused one frame (EINVAL: too short,
	// bad virtio header; EMSGSIZE).
	DropWriteRejected
	// DropLinkDown: the kernel refused a write because the link is down (EIO).
	DropLinkDown
	// NumDropReasons is the number of reasons, for sizing counter arrays.
	NumDropReasons
)

var dropReasonNames = [NumDropReasons]string{
	DropGSO:           "gso_superframe",
	DropBadVnetHdr:    "bad_vnet_hdr",
	DropTruncated:     "truncated",
	DropWriteRejected: "write_rejected",
	DropLinkDown:      "link_down",
}

// String is a short snake_case name fit for a metric label.
func (r DropReason) String() string {
	if r < NumDropReasons {
		return dropReasonNames[r]
	}
	return "unknown"
}

// ErrShortBuffer is returned by Read when a buffer has no room past offset.
var ErrShortBuffer = errors.New("netdev: buffer has no room past offset")
