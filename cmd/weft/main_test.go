package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/weftnet/weft/api"
)

func TestTopLevelHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		code, out, errOut := runCLI(args...)
		if code != exitOK || errOut != "" {
			t.Errorf("weft %v: exit %d, stderr %q", args, code, errOut)
		}
		for _, cmd := range commands {
			if !strings.Contains(out, "\n  "+cmd.name+" ") {
				t.Errorf("weft %v does not list command %s", args, cmd.name)
			}
		}
		for _, want := range []string{"--socket PATH", "WEFT_SOCKET", "-o, --output", "Examples:"} {
			if !strings.Contains(out, want) {
				t.Errorf("weft %v lacks %q", args, want)
			}
		}
	}
	code, out, errOut := runCLI()
	if code != exitUsage || out != "" || !strings.Contains(errOut, "Commands:") {
		t.Errorf("weft with no command: exit %d, stdout %q, stderr %q; want usage on stderr, exit 2", code, out, errOut)
	}
}

func TestCommandHelp(t *testing.T) {
	for _, cmd := range commands {
		if cmd.raw != nil {
			continue
		}
		t.Run(cmd.name, func(t *testing.T) {
			code, out, errOut := runCLI(cmd.name, "--help")
			if code != exitOK || errOut != "" {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			for _, want := range []string{"Usage: weft " + cmd.name, "Examples:\n  weft " + cmd.name, "Global flags:"} {
				if !strings.Contains(out, want) {
					t.Errorf("help lacks %q:\n%s", want, out)
				}
			}
			_, viaHelp, _ := runCLI("help", cmd.name)
			if viaHelp != out {
				t.Errorf("'weft help %s' differs from 'weft %s --help'", cmd.name, cmd.name)
			}
		})
	}
	_, out, _ := runCLI("attach", "--help")
	for _, flag := range []string{"--pod-id ID", "--netns PATH", "--ifname NAME", "(default eth0)", "--pod-namespace NS", "--pod-name NAME"} {
		if !strings.Contains(out, flag) {
			t.Errorf("attach help lacks %q", flag)
		}
	}
	_, out, _ = runCLI("trace", "--help")
	for _, flag := range []string{"--in POD|PORT", "--pcap FILE", "--index N", "--proto tcp|udp|icmp", "--ttl N", "(default 64)"} {
		if !strings.Contains(out, flag) {
			t.Errorf("trace help lacks %q", flag)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	sock := serve(t, &fakeService{})
	tests := []struct {
		name string
		args []string
		want string // in stderr
	}{
		{"unknown command", []string{"frobnicate"}, `weft: unknown command "frobnicate"`},
		{"unknown global flag", []string{"--nope", "status"}, "weft: flag provided but not defined: -nope"},
		{"unknown command flag", []string{"ports", "--all"}, "weft ports: flag provided but not defined: -all"},
		{"extra argument", []string{"status", "node-a"}, `weft status: unexpected argument "node-a"`},
		{"bad output", []string{"-o", "yaml", "status"}, `weft status: -o "yaml": want table or json`},
		{"bad timeout", []string{"status", "--timeout", "-1s"}, "want a positive duration"},
		{"attach without flags", []string{"attach"}, "weft attach: --pod-id, --netns required"},
		{"detach without pod", []string{"detach"}, "weft detach: --pod-id required"},
		{"trace without in", []string{"trace", "--dst", "10.0.0.1"}, "weft trace: --in required"},
		{"trace without dst", []string{"trace", "--in", "p"}, "--dst required (or --pcap)"},
		{"trace bad dst", []string{"trace", "--in", "p", "--dst", "fd00::1"}, `--dst "fd00::1": want an IPv4 address`},
		{"trace bad proto", []string{"trace", "--in", "p", "--dst", "10.0.0.1", "--proto", "sctp"}, `--proto "sctp"`},
		{"trace tcp without dport", []string{"trace", "--in", "p", "--dst", "10.0.0.1", "--proto", "tcp"}, "--dport required with --proto tcp"},
		{"trace icmp with port", []string{"trace", "--in", "p", "--dst", "10.0.0.1", "--dport", "80"}, "--sport and --dport go with --proto tcp or udp"},
		{"trace big port", []string{"trace", "--in", "p", "--dst", "10.0.0.1", "--proto", "udp", "--dport", "70000"}, "port 70000"},
		{"trace ttl 0", []string{"trace", "--in", "p", "--dst", "10.0.0.1", "--ttl", "0"}, "--ttl 0: want 1-255"},
		{"trace pcap and dst", []string{"trace", "--in", "p", "--pcap", "x.pcap", "--dst", "10.0.0.1"}, "--dst: --pcap gives the whole frame"},
		{"trace index without pcap", []string{"trace", "--in", "p", "--dst", "10.0.0.1", "--index", "2"}, "--index needs --pcap"},
		{"help unknown", []string{"help", "nope"}, `weft help: unknown command "nope"`},
		{"sim without subcommand", []string{"sim"}, "weft sim: want a subcommand"},
		{"sim unknown subcommand", []string{"sim", "frobnicate"}, `weft sim: unknown subcommand "frobnicate"`},
		{"sim kill without node", []string{"sim", "kill"}, "weft sim kill: want a node name"},
		{"sim exec without command", []string{"sim", "exec", "n1-p1"}, "weft sim exec: no command given"},
		{"sim bad output", []string{"sim", "status", "-o", "yaml"}, `weft sim status: -o "yaml"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCLI(append([]string{"--socket", sock}, tc.args...)...)
			if code != exitUsage || out != "" || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit 2 with %q", code, out, errOut, tc.want)
			}
		})
	}
}

func TestNotRunning(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "weftd.sock")
	code, out, errOut := runCLI("--socket", sock, "status")
	want := "weft: weftd is not running (no socket at " + sock + "): start it with `weftd --config ...` or check --socket\n"
	if code != exitError || out != "" || errOut != want {
		t.Errorf("exit %d, stdout %q, stderr %q; want exit 1 with %q", code, out, errOut, want)
	}
}

func TestSocketFromEnv(t *testing.T) {
	sock := serve(t, &fakeService{})
	t.Setenv("WEFT_SOCKET", sock)
	if code, out, errOut := runCLI("status"); code != exitOK || !strings.Contains(out, "node-a") {
		t.Errorf("with WEFT_SOCKET: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	// --socket wins over the environment.
	if code, _, errOut := runCLI("status", "--socket", filepath.Join(t.TempDir(), "none.sock")); code != exitError || !strings.Contains(errOut, "none.sock") {
		t.Errorf("--socket did not override WEFT_SOCKET: exit %d, stderr %q", code, errOut)
	}
}

// column returns the byte offset where cell starts in line, or -1.
func column(line, cell string) int { return strings.Index(line, cell) }

func TestTables(t *testing.T) {
	sock := serve(t, &fakeService{})
	tests := []struct {
		args []string
		// header and a row's cell that must start in the same column
		header, cell string
		want         []string
	}{
		{[]string{"status"}, "", "", []string{"node-a", "192.168.50.10 (eth0)", "10.244.1.0/24", "vni 7, udp port 4789", "etcd: degraded since 5m0s ago: context deadline exceeded", "1450", "tap-tso,udp-gso"}},
		{[]string{"ports"}, "ADDRESS", "10.244.1.3/24", []string{"c0ffee001122 ", "default/web-0", "wt3a2b1c", "3.0MiB", "1000B", "10m0s ago"}},
		{[]string{"peers"}, "LEASE", "in 25s", []string{"node-b", "192.168.50.11", "10.244.2.0/24", "02:aa:00:00:00:02", "not peers (1)", "node-c  no spec.podCIDR yet"}},
		{[]string{"subnets"}, "FREE", "250", []string{"node-a *", "expired 3s ago"}},
		{[]string{"fdb"}, "AGE", "1.5s", []string{"02:aa:00:00:00:02", "wt3a2b1c"}},
		{[]string{"routes"}, "VIA", "192.168.50.11", []string{"10.244.1.0/24", "local", "peer", "node-b"}},
		{[]string{"neigh"}, "STATIC", "yes", []string{"10.244.1.3", "1m0s"}},
		{[]string{"neighbours"}, "STATIC", "yes", nil},
		{[]string{"ipam"}, "POD-ID", "c0ffee", []string{"subnet 10.244.1.0/24: 1 used, 250 free"}},
		{[]string{"counters"}, "VALUE", "3", []string{"drop.no_route", "drop.spoofed_source", "tap.rx_frames"}},
		{[]string{"trace", "--in", "c0ffee", "--dst", "10.244.2.3"}, "DECISION", "source ok", []string{"verdict: encap node-b"}},
		{[]string{"attach", "--pod-id", "c0ffee", "--netns", "/var/run/netns/p1"}, "", "", []string{"10.244.1.3/24", "eth0 in /var/run/netns/p1"}},
		{[]string{"detach", "--pod-id", "c0ffee"}, "", "", []string{"detached eth0 of pod c0ffee"}},
		{[]string{"version"}, "", "", []string{"weft ", "weftd", "v0.0.1-test on node node-a"}},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, out, errOut := runCLI(append([]string{"--socket", sock}, tc.args...)...)
			if tc.args[0] == "ports" && strings.Contains(errOut, "--no-trunc") {
				errOut = "" // the cut pod ID is said so (TestPodIDsWhole)
			}
			if code != exitOK || errOut != "" {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if tc.header == "" {
				return
			}
			lines := strings.Split(out, "\n")
			var header, row string
			for _, l := range lines {
				if header == "" && strings.Contains(l, tc.header) {
					header = l
				} else if header != "" && strings.Contains(l, tc.cell) {
					row = l
					break
				}
			}
			if header == "" || row == "" || column(header, tc.header) != column(row, tc.cell) {
				t.Errorf("column %s and cell %q are not aligned:\n%s", tc.header, tc.cell, out)
			}
		})
	}
}

func TestCountersNonzero(t *testing.T) {
	sock := serve(t, &fakeService{})
	_, out, _ := runCLI("--socket", sock, "counters", "--nonzero")
	if strings.Contains(out, "drop.spoofed_source") || !strings.Contains(out, "drop.no_route") {
		t.Errorf("--nonzero output:\n%s", out)
	}
}

func TestJSON(t *testing.T) {
	sock := serve(t, &fakeService{})
	tests := []struct {
		args []string
		into any
		want any
	}{
		{[]string{"status"}, &api.Status{}, fakeStatus},
		{[]string{"ports"}, &[]api.Port{}, fakePorts},
		{[]string{"peers"}, &[]api.Peer{}, fakePeers},
		{[]string{"subnets"}, &[]api.Subnet{}, fakeSubnets},
		{[]string{"fdb"}, &[]api.FDBEntry{}, fakeFDB},
		{[]string{"routes"}, &[]api.Route{}, fakeRoutes},
		{[]string{"neigh"}, &[]api.Neighbour{}, fakeNeigh},
		{[]string{"ipam"}, &api.IPAM{}, fakeIPAM},
		{[]string{"counters"}, &api.Counters{}, fakeCounters},
		{[]string{"trace", "--in", "c0ffee", "--dst", "10.244.2.3"}, &api.TraceResponse{}, fakeTrace},
		{[]string{"attach", "--pod-id", "c0ffee", "--netns", "/n"}, &api.AttachResponse{}, fakeAttach},
		{[]string{"detach", "--pod-id", "c0ffee"}, &detachResult{}, detachResult{PodID: "c0ffee", IfName: "eth0", Detached: true}},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			// -o after the command works as well as before it.
			code, out, errOut := runCLI(append(append([]string{"--socket", sock}, tc.args...), "-o", "json")...)
			if code != exitOK || errOut != "" {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			if !strings.HasPrefix(out, "{\n  \"") && !strings.HasPrefix(out, "[\n  {") {
				t.Errorf("output is not indented JSON:\n%s", out)
			}
			if err := json.Unmarshal([]byte(out), tc.into); err != nil {
				t.Fatalf("output is not JSON: %v\n%s", err, out)
			}
			if got := reflect.ValueOf(tc.into).Elem().Interface(); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}

	var v versionInfo
	_, out, _ := runCLI("--socket", filepath.Join(t.TempDir(), "x.sock"), "-o", "json", "version")
	if err := json.Unmarshal([]byte(out), &v); err != nil || v.Weft == "" || !strings.Contains(v.WeftdError, "not running") {
		t.Errorf("version -o json without weftd = %+v, %v", v, err)
	}
}

func TestEmptyTables(t *testing.T) {
	sock := serve(t, &emptyService{&fakeService{}})
	for _, tc := range []struct{ cmd, want string }{
		{"ports", "no pod ports attached"},
		{"peers", "no peers"},
		{"counters", "no counters"},
	} {
		code, out, _ := runCLI("--socket", sock, tc.cmd)
		if code != exitOK || strings.TrimSpace(out) != tc.want {
			t.Errorf("weft %s on an empty node: exit %d, %q, want %q", tc.cmd, code, out, tc.want)
		}
	}
}

type emptyService struct{ *fakeService }

func (emptyService) Ports(_ context.Context) ([]api.Port, error)      { return nil, nil }
func (emptyService) Peers(_ context.Context) ([]api.Peer, error)      { return nil, nil }
func (emptyService) Counters(_ context.Context) (api.Counters, error) { return nil, nil }

// Status: a node alone, whose registry knows no other node.
func (emptyService) Status(context.Context) (api.Status, error) {
	s := fakeStatus
	s.Registry.NotPeers = nil
	return s, nil
}

func TestRequestsReachService(t *testing.T) {
	svc := &fakeService{}
	sock := serve(t, svc)
	runs := [][]string{
		{"attach", "--pod-id", "p1", "--netns", "/proc/42/ns/net", "--ifname", "net1", "--pod-namespace", "ns", "--pod-name", "web"},
		{"detach", "--pod-id", "p1", "--ifname", "net1"},
		{"trace", "--in", "p1", "--src", "10.244.1.3", "--dst", "10.244.2.3", "--proto", "UDP", "--sport", "5353", "--dport", "53", "--ttl", "2", "--size", "100"},
	}
	for _, args := range runs {
		if code, _, errOut := runCLI(append([]string{"--socket", sock}, args...)...); code != exitOK {
			t.Fatalf("weft %v: exit %d, %s", args, code, errOut)
		}
	}
	wantAttach := api.AttachRequest{PodID: "p1", Netns: "/proc/42/ns/net", IfName: "net1", PodNamespace: "ns", PodName: "web"}
	wantDetach := api.DetachRequest{PodID: "p1", IfName: "net1"}
	wantTrace := api.TraceRequest{In: "p1", Src: netip.MustParseAddr("10.244.1.3"), Dst: netip.MustParseAddr("10.244.2.3"),
		Proto: api.ProtoUDP, SPort: 5353, DPort: 53, TTL: 2, Size: 100}
	if len(svc.attached) != 1 || !reflect.DeepEqual(svc.attached[0], wantAttach) {
		t.Errorf("attach requests = %+v, want %+v", svc.attached, wantAttach)
	}
	if len(svc.detached) != 1 || svc.detached[0] != wantDetach {
		t.Errorf("detach requests = %+v, want %+v", svc.detached, wantDetach)
	}
	if len(svc.traced) != 1 || !reflect.DeepEqual(svc.traced[0], wantTrace) {
		t.Errorf("trace requests = %+v, want %+v", svc.traced, wantTrace)
	}
}

func TestAPIErrorExit(t *testing.T) {
	sock := serve(t, &fakeService{err: fmt.Errorf("pod p1 eth0: %w", api.ErrNotFound)})
	code, out, errOut := runCLI("--socket", sock, "detach", "--pod-id", "p1")
	if code != exitError || out != "" || errOut != "weft: pod p1 eth0: not found\n" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// testFrames are Ethernet frames for capture files.
func testFrames(t *testing.T) [][]byte {
	t.Helper()
	var frames [][]byte
	for i, dst := range []string{"10.244.2.3", "10.244.2.4"} {
		eth := &layers.Ethernet{SrcMAC: mac2[:], DstMAC: mac1[:], EthernetType: layers.EthernetTypeIPv4}
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP,
			SrcIP: netip.MustParseAddr("10.244.1.3").AsSlice(), DstIP: netip.MustParseAddr(dst).AsSlice()}
		udp := &layers.UDP{SrcPort: layers.UDPPort(1000 + i), DstPort: 53}
		udp.SetNetworkLayerForChecksum(ip)
		buf := gopacket.NewSerializeBuffer()
		err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
			eth, ip, udp, gopacket.Payload([]byte("query")))
		if err != nil {
			t.Fatal(err)
		}
		frames = append(frames, append([]byte(nil), buf.Bytes()...))
	}
	return frames
}

func writePcap(t *testing.T, path string, ng bool, link layers.LinkType, frames [][]byte, cut int) {
	t.Helper()
	var buf bytes.Buffer
	write := func(ci gopacket.CaptureInfo, data []byte) error { return nil }
	var flush func() error
	if ng {
		w, err := pcapgo.NewNgWriter(&buf, link)
		if err != nil {
			t.Fatal(err)
		}
		write, flush = w.WritePacket, w.Flush
	} else {
		w := pcapgo.NewWriter(&buf)
		if err := w.WriteFileHeader(65536, link); err != nil {
			t.Fatal(err)
		}
		write = w.WritePacket
	}
	for _, f := range frames {
		ci := gopacket.CaptureInfo{Timestamp: t0, CaptureLength: len(f), Length: len(f)}
		data := f
		if cut > 0 {
			data, ci.CaptureLength = f[:cut], cut
		}
		if err := write(ci, data); err != nil {
			t.Fatal(err)
		}
	}
	if flush != nil {
		if err := flush(); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestTracePcap(t *testing.T) {
	frames := testFrames(t)
	dir := t.TempDir()
	pcapPath := filepath.Join(dir, "two.pcap")
	ngPath := filepath.Join(dir, "two.pcapng")
	rawPath := filepath.Join(dir, "raw.pcap")
	cutPath := filepath.Join(dir, "cut.pcap")
	junkPath := filepath.Join(dir, "junk.pcap")
	writePcap(t, pcapPath, false, layers.LinkTypeEthernet, frames, 0)
	writePcap(t, ngPath, true, layers.LinkTypeEthernet, frames, 0)
	writePcap(t, rawPath, false, layers.LinkTypeRaw, frames, 0)
	writePcap(t, cutPath, false, layers.LinkTypeEthernet, frames, 20)
	if err := os.WriteFile(junkPath, []byte("this is not a capture file at all"), 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name      string
		file      string
		index     string
		wantFrame []byte
		wantErr   string
	}{
		{"pcap first", pcapPath, "", frames[0], ""},
		{"pcap second", pcapPath, "1", frames[1], ""},
		{"pcapng second", ngPath, "1", frames[1], ""},
		{"past end", pcapPath, "2", nil, "--index 2 is past the end: the file has 2 packets"},
		{"raw link type", rawPath, "", nil, "trace needs Ethernet frames"},
		{"truncated", cutPath, "", nil, "was cut to 20 of"},
		{"not a capture", junkPath, "", nil, "not a pcap or pcapng file"},
		{"missing", filepath.Join(dir, "nope.pcap"), "", nil, "no such file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			svc := &fakeService{}
			args := []string{"--socket", serve(t, svc), "trace", "--in", "wt3a2b1c", "--pcap", tc.file}
			if tc.index != "" {
				args = append(args, "--index", tc.index)
			}
			code, _, errOut := runCLI(args...)
			if tc.wantErr != "" {
				if code != exitError || !strings.Contains(errOut, tc.wantErr) || len(svc.traced) != 0 {
					t.Errorf("exit %d, stderr %q; want exit 1 with %q and no request", code, errOut, tc.wantErr)
				}
				return
			}
			if code != exitOK {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			if len(svc.traced) != 1 || !bytes.Equal(svc.traced[0].Frame, tc.wantFrame) || svc.traced[0].In != "wt3a2b1c" || svc.traced[0].Dst.IsValid() {
				t.Errorf("trace requests = %+v, want one carrying frame %x", svc.traced, tc.wantFrame)
			}
		})
	}
}

func TestFormatHelpers(t *testing.T) {
	ages := []struct {
		d    time.Duration
		want string
	}{
		{-time.Second, "0s"}, {250 * time.Millisecond, "250ms"}, {1537 * time.Millisecond, "1.5s"}, {42 * time.Second, "42s"},
		{3*time.Minute + 12*time.Second, "3m12s"}, {5*time.Hour + 4*time.Minute, "5h4m"}, {75 * time.Hour, "3d3h"},
	}
	for _, tc := range ages {
		if got := age(tc.d); got != tc.want {
			t.Errorf("age(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
	sizes := []struct {
		n    uint64
		want string
	}{{0, "0B"}, {1023, "1023B"}, {1024, "1.0KiB"}, {1536, "1.5KiB"}, {5 << 30, "5.0GiB"}, {1 << 62, "4.0EiB"}}
	for _, tc := range sizes {
		if got := byteSize(tc.n); got != tc.want {
			t.Errorf("byteSize(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
	if got := until(time.Time{}, now); got != "-" {
		t.Errorf("until(zero) = %q", got)
	}
	if got := count(api.Unknown); got != "-" {
		t.Errorf("count(Unknown) = %q", got)
	}
}

// TestPodIDsWhole is issue 12 item 10: `weft ports` cut pod IDs to 12
// characters with no way to see the rest in the table. --no-trunc shows
// them whole, and a cut table says so on stderr.
func TestPodIDsWhole(t *testing.T) {
	sock := serve(t, &fakeService{})
	const whole = "c0ffee00112233445566778899"
	for _, cmd := range []string{"ports", "ipam"} {
		t.Run(cmd, func(t *testing.T) {
			code, out, errOut := runCLI("--socket", sock, cmd, "--no-trunc")
			if code != exitOK || errOut != "" {
				t.Fatalf("%s --no-trunc: exit %d, stderr %q", cmd, code, errOut)
			}
			if cmd == "ports" && !strings.Contains(out, whole) {
				t.Errorf("%s --no-trunc lacks the whole pod ID %s:\n%s", cmd, whole, out)
			}
		})
	}
	code, out, errOut := runCLI("--socket", sock, "ports")
	if code != exitOK || strings.Contains(out, whole) || !strings.Contains(out, whole[:12]+" ") {
		t.Fatalf("ports: exit %d, want the ID cut to %s:\n%s", code, whole[:12], out)
	}
	if !strings.Contains(errOut, "--no-trunc") {
		t.Errorf("ports cut a pod ID without saying how to see it whole; stderr %q", errOut)
	}
}
