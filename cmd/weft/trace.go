package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/weftnet/weft/api"
)

var traceCmd = &command{
	name:     "trace",
	summary:  "show what weftd would do with a packet entering at a port",
	synopsis: "--in POD|PORT (--dst IP [--src IP] [--proto P] [--sport N] [--dport N] [--ttl N] [--size N] | --pcap FILE [--index N]) [flags]",
	help: `Trace one frame through the node's pipeline without sending it: port checks,
L2 switching, L3 routing, output. The frame enters at the port given by --in (a
pod ID or a port name). Either describe the packet (--dst, and optionally
--src, --proto, ports, TTL and size; the source defaults to the port's own
address), or take a whole Ethernet frame from a capture file (pcap or pcapng).

Examples:
  weft trace --in 3f2a9c --dst 10.244.2.7
  weft trace --in 3f2a9c --dst 10.244.2.7 --proto tcp --dport 443
  weft trace --in 3f2a9c --dst 10.244.2.7 --proto udp --sport 5353 --dport 53 --ttl 1
  weft trace --in wt3a2b1c --pcap drop.pcap --index 3`,
	setup: func(fs *flag.FlagSet) func(context.Context, *cli) error {
		var (
			in, src, dst, proto, pcapFile string
			sport, dport, ttl, size       uint
			index                         int
		)
		fs.StringVar(&in, "in", "", "`POD|PORT` the pod ID or port name the frame enters at; required")
		fs.StringVar(&src, "src", "", "`IP` source address (default: the port's own)")
		fs.StringVar(&dst, "dst", "", "`IP` destination address; required unless --pcap")
		fs.StringVar(&proto, "proto", api.ProtoICMP, "`tcp|udp|icmp` protocol; icmp sends an echo request")
		fs.UintVar(&sport, "sport", 0, "`PORT` source port for tcp and udp (default: weftd picks one)")
		fs.UintVar(&dport, "dport", 0, "`PORT` destination port; required for tcp and udp")
		fs.UintVar(&ttl, "ttl", 64, "`N` IP time to live, 1-255")
		fs.UintVar(&size, "size", 0, "`BYTES` IP total length (default: a small packet)")
		fs.StringVar(&pcapFile, "pcap", "", "`FILE` take the whole frame from this pcap or pcapng capture (Ethernet link type)")
		fs.IntVar(&index, "index", 0, "`N` which packet of the --pcap file, counting from 0")
		return func(ctx context.Context, c *cli) error {
			set := map[string]bool{}
			fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
			if err := required([2]string{"in", in}); err != nil {
				return err
			}
			req := api.TraceRequest{In: in}
			if pcapFile != "" {
				for _, name := range []string{"src", "dst", "proto", "sport", "dport", "ttl", "size"} {
					if set[name] {
						return &usageError{msg: fmt.Sprintf("--%s: --pcap gives the whole frame; drop --%s", name, name)}
					}
				}
				if index < 0 {
					return &usageError{msg: fmt.Sprintf("--index %d: want 0 or more", index)}
				}
				frame, err := readPcapFrame(pcapFile, index)
				if err != nil {
					return err
				}
				req.Frame = frame
			} else {
				if set["index"] {
					return &usageError{msg: "--index needs --pcap"}
				}
				var err error
				if req, err = traceFields(in, src, dst, proto, sport, dport, ttl, size, set); err != nil {
					return err
				}
			}
			resp, err := c.client().Trace(ctx, req)
			if err != nil {
				return err
			}
			return c.emit(resp, func(t *table) {
				t.row("STAGE", "DECISION")
				for _, s := range resp.Steps {
					t.row(s.Stage, s.Decision)
				}
				t.row()
				t.row("verdict: " + resp.Verdict)
			})
		}
	},
}

// traceFields builds a request from the packet-describing flags.
func traceFields(in, src, dst, proto string, sport, dport, ttl, size uint, set map[string]bool) (api.TraceRequest, error) {
	req := api.TraceRequest{In: in, Proto: strings.ToLower(proto)}
	if dst == "" {
		return req, &usageError{msg: "--dst required (or --pcap)"}
	}
	var err error
	if req.Dst, err = parseIPv4("dst", dst); err != nil {
		return req, err
	}
	if src != "" {
		if req.Src, err = parseIPv4("src", src); err != nil {
			return req, err
		}
	}
	switch req.Proto {
	case api.ProtoTCP, api.ProtoUDP:
		if dport == 0 {
			return req, &usageError{msg: "--dport required with --proto " + req.Proto}
		}
	case api.ProtoICMP:
		if set["sport"] || set["dport"] {
			return req, &usageError{msg: "--sport and --dport go with --proto tcp or udp"}
		}
	default:
		return req, &usageError{msg: fmt.Sprintf("--proto %q: want tcp, udp or icmp", proto)}
	}
	if sport > 65535 || dport > 65535 {
		return req, &usageError{msg: fmt.Sprintf("port %d: want 1-65535", max(sport, dport))}
	}
	if ttl < 1 || ttl > 255 {
		return req, &usageError{msg: fmt.Sprintf("--ttl %d: want 1-255", ttl)}
	}
	if size > 65535 {
		return req, &usageError{msg: fmt.Sprintf("--size %d: want at most 65535", size)}
	}
	req.SPort, req.DPort, req.TTL, req.Size = uint16(sport), uint16(dport), uint8(ttl), int(size)
	return req, nil
}

func parseIPv4(flagName, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return netip.Addr{}, &usageError{msg: fmt.Sprintf("--%s %q: want an IPv4 address", flagName, s)}
	}
	return a, nil
}

// pcapngMagic is the block type of a pcapng section header, the first four
// bytes of any pcapng file (byte-order independent, see the pcapng spec).
const pcapngMagic = 0x0A0D0D0A

// packetReader is what pcapgo's two readers have in common.
type packetReader interface {
	ReadPacketData() ([]byte, gopacket.CaptureInfo, error)
	LinkType() layers.LinkType
}

// readPcapFrame returns packet index (from 0) of a pcap or pcapng file.
func readPcapFrame(path string, index int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	br := bufio.NewReader(f)
	magic, err := br.Peek(4)
	if err != nil {
		return nil, fmt.Errorf("%s: not a pcap or pcapng file (%d bytes)", path, len(magic))
	}
	var r packetReader
	if binary.LittleEndian.Uint32(magic) == pcapngMagic {
		r, err = pcapgo.NewNgReader(br, pcapgo.DefaultNgReaderOptions)
	} else {
		r, err = pcapgo.NewReader(br)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: not a pcap or pcapng file: %w", path, err)
	}
	if lt := r.LinkType(); lt != layers.LinkTypeEthernet {
		return nil, fmt.Errorf("%s: link type %v; trace needs Ethernet frames (capture on a TAP or veth, not 'any')", path, lt)
	}
	for i := 0; ; i++ {
		data, ci, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: --index %d is past the end: the file has %d packets", path, index, i)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: packet %d: %w", path, i, err)
		}
		if i < index {
			continue
		}
		if ci.CaptureLength < ci.Length {
			return nil, fmt.Errorf("%s: packet %d was cut to %d of %d bytes when captured; capture with a larger snap length (tcpdump -s 0)", path, i, ci.CaptureLength, ci.Length)
		}
		if len(data) > api.MaxTraceFrame {
			return nil, fmt.Errorf("%s: packet %d is %d bytes, more than the %d a trace takes", path, i, len(data), api.MaxTraceFrame)
		}
		return data, nil
	}
}
