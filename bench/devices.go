package bench

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/netdev"
	"github.com/weftnet/weft/overlay"
	"github.com/weftnet/weft/packet"
)

// The replay's stand-ins for the node's devices: the data path reads pod
// TAPs that are netdev.Fakes (the capture's frames are written into their
// pod ends), writes to sinkDevs that count, sends to an encapSink that
// counts, and reads the underlay from a dgramSource of the capture's
// VXLAN payloads.

// sinkDev is the device the data path writes a port's frames to: it
// counts them into a Sink, as the pod's TAP would take them.
type sinkDev struct {
	name     string
	vnet     bool
	offloads int
	sink     *Sink
}

var _ netdev.Device = (*sinkDev)(nil)

var errSinkRead = errors.New("bench: a sink is not read")

func (d *sinkDev) Name() string                   { return d.name }
func (d *sinkDev) BatchSize() int                 { return 1 }
func (d *sinkDev) Close() error                   { return nil }
func (d *sinkDev) VnetHdr() bool                  { return d.vnet }
func (d *sinkDev) Offloads() int                  { return d.offloads }
func (d *sinkDev) EndTurn()                       {}
func (d *sinkDev) Drops(netdev.DropReason) uint64 { return 0 }

func (d *sinkDev) Read([][]byte, []int, int) (int, error) { return 0, errSinkRead }
func (d *sinkDev) ReadVnet([][]byte, []int, []netdev.VirtioHdr, int) (int, error) {
	return 0, errSinkRead
}
func (d *sinkDev) ReadVnetTurn([][]byte, []int, []netdev.VirtioHdr, int) (int, error) {
	return 0, errSinkRead
}
func (d *sinkDev) TryReadVnetTurn([][]byte, []int, []netdev.VirtioHdr, int) int { return 0 }
func (d *sinkDev) WaitRead() error                                              { return errSinkRead }
func (d *sinkDev) ReadVnetTurnNow([][]byte, []int, []netdev.VirtioHdr, int) (int, error) {
	return 0, errSinkRead
}

// Write counts the frames.
func (d *sinkDev) Write(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		d.sink.Frames++
		d.sink.Bytes += uint64(len(b) - offset)
	}
	return len(bufs), nil
}

// WriteVnet counts the frames; a super-frame counts as the segments the
// pod's stack takes it for (GRO'd packets), each with its headers.
func (d *sinkDev) WriteVnet(bufs [][]byte, hdrs []netdev.VirtioHdr, offset int) (int, error) {
	for i, b := range bufs {
		d.countVnet(len(b)-offset, &hdrs[i])
	}
	return len(bufs), nil
}

func (d *sinkDev) countVnet(n int, h *netdev.VirtioHdr) {
	if h.GSO() == netdev.GSONone || h.GSOSize == 0 || n <= int(h.HdrLen) {
		d.sink.Frames++
		d.sink.Bytes += uint64(n)
		return
	}
	segs := (n - int(h.HdrLen) + int(h.GSOSize) - 1) / int(h.GSOSize)
	d.sink.Frames += uint64(segs)
	d.sink.Bytes += uint64(n + (segs-1)*int(h.HdrLen))
}

// WriteVnetGather counts the frame the parts make as WriteVnet counts one.
func (d *sinkDev) WriteVnetGather(parts [][]byte, hdr netdev.VirtioHdr) (int, error) {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	d.countVnet(n, &hdr)
	return 1, nil
}

// encapSink is the underlay socket the data path sends on: it counts the
// datagrams and the full outer frames they become on the wire (Ethernet,
// IPv4 and UDP headers added by the kernel).
type encapSink struct{ sink *Sink }

func (e encapSink) WriteGather(dgrams, tails [][]byte, _ []netip.AddrPort) (int, error) {
	for i, d := range dgrams {
		n := len(d)
		if tails != nil {
			n += len(tails[i])
		}
		e.sink.Frames++
		e.sink.Bytes += uint64(n + overlay.OuterIPv4Len - overlay.HeaderLen)
	}
	return len(dgrams), nil
}

// captureTap is a pod's TAP as the replay's transmitters read it: the
// frames of the batch being replayed, copied into the transmitter's
// buffers on read (the one copy a TAP read makes), with zero virtio
// headers on a virtio-header TAP. One goroutine reads it; the read turn
// is always free.
type captureTap struct {
	sinkDev
	batch  int
	frames [][]byte // queued: the batch being replayed
	next   int
	drops  [netdev.NumDropReasons]uint64
}

func (c *captureTap) BatchSize() int { return c.batch }

func (c *captureTap) Drops(r netdev.DropReason) uint64 {
	if r < netdev.NumDropReasons {
		return c.drops[r]
	}
	return 0
}

func (c *captureTap) ReadVnetTurn(bufs [][]byte, sizes []int, hdrs []netdev.VirtioHdr, offset int) (int, error) {
	return c.TryReadVnetTurn(bufs, sizes, hdrs, offset), nil
}

func (c *captureTap) ReadVnetTurnNow(bufs [][]byte, sizes []int, hdrs []netdev.VirtioHdr, offset int) (int, error) {
	return c.TryReadVnetTurn(bufs, sizes, hdrs, offset), nil
}

// WaitRead implements netdev.Device. The replay only drains (Transmit
// without wait); with nothing queued nothing ever will be, so it fails
// rather than block.
func (c *captureTap) WaitRead() error {
	if c.next < len(c.frames) {
		return nil
	}
	return errSinkRead
}

// TryReadVnetTurn implements netdev.Device: up to a batch of the queued
// frames. An empty frame is refused as a TAP never hands one out, a frame
// longer than the buffer as a truncated read.
func (c *captureTap) TryReadVnetTurn(bufs [][]byte, sizes []int, hdrs []netdev.VirtioHdr, offset int) int {
	n := 0
	for n < min(len(bufs), len(sizes), len(hdrs), c.batch) && c.next < len(c.frames) {
		f := c.frames[c.next]
		c.next++
		switch {
		case len(f) == 0:
			c.drops[netdev.DropWriteRejected]++
			continue
		case len(f) > len(bufs[n])-offset:
			c.drops[netdev.DropTruncated]++
			continue
		}
		sizes[n] = copy(bufs[n][offset:], f)
		hdrs[n] = netdev.VirtioHdr{}
		n++
	}
	return n
}

// dgram is one captured VXLAN frame as the node's socket would receive
// it: the UDP payload and the sender.
type dgram struct {
	payload []byte
	from    netip.AddrPort
}

// dgramSource is the underlay socket the replay's receiver reads: one
// batch of datagrams at a time, copied into the receiver's buffers as the
// kernel would; with gro, runs of equal-size datagrams from one sender
// come as one read, as UDP GRO hands them out.
type dgramSource struct {
	dgrams []dgram
	next   int
	gro    bool
}

func (s *dgramSource) more() bool { return s.next < len(s.dgrams) }

// ReadBatch implements datapath.Reader.
func (s *dgramSource) ReadBatch(bufs [][]byte, sizes, segSizes []int, offset int, from []netip.AddrPort) (int, error) {
	n := 0
	for n < len(bufs) && s.next < len(s.dgrams) {
		d := s.dgrams[s.next]
		s.next++
		buf := bufs[n][offset:]
		size := copy(buf, d.payload)
		seg := size
		for segs := 1; s.gro && segs < overlay.MaxGSOSegments && s.next < len(s.dgrams); segs++ {
			e := s.dgrams[s.next]
			if e.from != d.from || len(e.payload) > seg || size+len(e.payload) > len(buf) {
				break
			}
			size += copy(buf[size:], e.payload)
			s.next++
			if len(e.payload) < seg {
				break // a shorter datagram ends a GRO run
			}
		}
		sizes[n], segSizes[n], from[n] = size, seg, d.from
		n++
	}
	return n, nil
}

// Truncated implements datapath.Reader: the source never truncates.
func (s *dgramSource) Truncated() uint64 { return 0 }

// udpPayload returns the UDP payload of a captured frame sent to the
// VXLAN port, and its sender, when the frame is one the node's socket
// would receive: IPv4 (no options needed, not a fragment) and UDP to port.
// Frames it refuses are classified by overlay's full-frame checks.
func udpPayload(f []byte, port uint16) (dgram, bool) {
	const ipOff = packet.EthHdrLen
	if len(f) < ipOff+packet.IPv4MinHdrLen+packet.UDPHdrLen || packet.EthType(f) != packet.EtherTypeIPv4 {
		return dgram{}, false
	}
	ip := packet.IPv4(f[ipOff:])
	if !ip.Valid() || ip.Proto() != packet.IPProtoUDP || ip.IsFragment() || !ip.HeaderChecksumOK() {
		return dgram{}, false
	}
	l4 := ip[ip.HeaderLen():ip.TotalLen()]
	if len(l4) < packet.UDPHdrLen || binary.BigEndian.Uint16(l4[packet.UDPOffDstPort:]) != port {
		return dgram{}, false
	}
	ulen := int(binary.BigEndian.Uint16(l4[packet.UDPOffLen:]))
	if ulen < packet.UDPHdrLen || ulen > len(l4) {
		return dgram{}, false
	}
	src := netip.AddrFrom4(ip.Src4())
	sport := binary.BigEndian.Uint16(l4[packet.UDPOffSrcPort:])
	return dgram{payload: l4[packet.UDPHdrLen:ulen], from: netip.AddrPortFrom(src, sport)}, true
}

var _ datapath.Reader = (*dgramSource)(nil)
