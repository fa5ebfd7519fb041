package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// MaxFrameLen is the longest frame the replay loads: a 9000-byte MTU
// frame with room to spare, as the node's buffers (node.frameBufSize).
// Longer captured frames (TSO super-frames captured before segmentation)
// are skipped and counted.
const MaxFrameLen = 9216

// maxSnaplen bounds what a pcap header may make the reader allocate per
// packet.
const maxSnaplen = 256 << 10

// pcapEpoch is the first timestamp of generated pcaps; frames follow every
// pcapGap, so the files are byte-for-byte reproducible.
var pcapEpoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

const pcapGap = 10 * time.Microsecond

// WritePcap writes frames as a classic pcap (Ethernet, microsecond
// timestamps) with fixed timestamps.
func WritePcap(w io.Writer, frames [][]byte) error {
	pw := pcapgo.NewWriter(w)
	if err := pw.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		return fmt.Errorf("write pcap header: %w", err)
	}
	for i, f := range frames {
		ci := gopacket.CaptureInfo{Timestamp: pcapEpoch.Add(time.Duration(i) * pcapGap), CaptureLength: len(f), Length: len(f)}
		if err := pw.WritePacket(ci, f); err != nil {
			return fmt.Errorf("write pcap frame %d: %w", i, err)
		}
	}
	return nil
}

// WritePcapFile writes frames to path (see WritePcap).
func WritePcapFile(path string, frames [][]byte) error {
	var buf bytes.Buffer
	if err := WritePcap(&buf, frames); err != nil {
		return err
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// Capture is the Ethernet frames of a pcap, loaded into one arena.
type Capture struct {
	Frames [][]byte
	// Truncated counts frames captured shorter than they were on the wire
	// (snap length); they are replayed as captured.
	Truncated int
	// Skipped counts frames longer than MaxFrameLen, not loaded.
	Skipped int
}

// Bytes returns the total length of the loaded frames.
func (c *Capture) Bytes() int {
	n := 0
	for _, f := range c.Frames {
		n += len(f)
	}
	return n
}

type packetReader interface {
	ReadPacketData() ([]byte, gopacket.CaptureInfo, error)
}

// ReadPcap loads a classic pcap or a pcapng stream of Ethernet frames.
func ReadPcap(r io.Reader) (*Capture, error) {
	br := bufio.NewReader(r)
	magic, err := br.Peek(4)
	if err != nil {
		return nil, fmt.Errorf("read pcap: %w", err)
	}
	var pr packetReader
	var link layers.LinkType
	if bytes.Equal(magic, []byte{0x0a, 0x0d, 0x0d, 0x0a}) {
		ng, err := pcapgo.NewNgReader(br, pcapgo.DefaultNgReaderOptions)
		if err != nil {
			return nil, fmt.Errorf("read pcapng: %w", err)
		}
		pr, link = ng, ng.LinkType()
	} else {
		pc, err := pcapgo.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("read pcap: %w", err)
		}
		// Like tcpdump and wireshark, trust the packet headers rather than
		// the file's snap length, which some writers get wrong; but bound
		// what one header can make the reader allocate.
		pc.SetSnaplen(maxSnaplen)
		pr, link = pc, pc.LinkType()
	}
	if link != layers.LinkTypeEthernet {
		return nil, fmt.Errorf("read pcap: link type %s: only Ethernet captures can be replayed (capture on the interface, not on \"any\")", link)
	}
	c := &Capture{}
	var arena []byte
	var ends []int
	for {
		data, ci, err := pr.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read pcap frame %d: %w", len(ends)+c.Skipped+1, err)
		}
		if len(data) > MaxFrameLen {
			c.Skipped++
			continue
		}
		if ci.Length > ci.CaptureLength {
			c.Truncated++
		}
		arena = append(arena, data...)
		ends = append(ends, len(arena))
	}
	c.Frames = make([][]byte, len(ends))
	start := 0
	for i, end := range ends {
		c.Frames[i] = arena[start:end:end]
		start = end
	}
	return c, nil
}

// LoadPcap loads the pcap at path (see ReadPcap).
func LoadPcap(path string) (*Capture, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load pcap: %w", err)
	}
	defer f.Close()
	c, err := ReadPcap(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}
