package sim

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestOwnNamespace(t *testing.T) {
	tests := []struct {
		sim, ns string
		want    bool
	}{
		{"weft", "weft-u", true},
		{"weft", "weft-n1", true},
		{"weft", "weft-n12-p3", true},
		{"weft", "weft-n1-p", false},
		{"weft", "weft-n-p1", false},
		{"weft", "weft-x1", false},
		{"weft", "weft-n1-p1-x", false},
		{"weft", "weftd-n1", false},
		{"weft", "other-n1", false},
		{"weft", "weft-u2", false},
		{"weft", "weft-k", true}, // the kube control plane
		{"weft", "weft-k1", false},
		{"w-1", "w-1-n2", true},
	}
	for _, tc := range tests {
		if got := ownNamespace(tc.sim, tc.ns); got != tc.want {
			t.Errorf("ownNamespace(%q, %q) = %v, want %v", tc.sim, tc.ns, got, tc.want)
		}
	}
}

func TestCellString(t *testing.T) {
	tests := []struct {
		cell Cell
		want string
	}{
		{Cell{}, "ok"},
		{Cell{ICMP: "x"}, "FAIL(icmp)"},
		{Cell{TCP: "x"}, "FAIL(tcp)"},
		{Cell{ICMP: "x", TCP: "y"}, "FAIL(icmp,tcp)"},
		{Cell{NAT: "saw 10.0.0.9"}, "FAIL(nat)"},
	}
	for _, tc := range tests {
		if got := tc.cell.String(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.cell, got, tc.want)
		}
	}
}

func TestReportWriteTo(t *testing.T) {
	a, b := netip.MustParseAddr("10.244.0.3"), netip.MustParseAddr("10.244.1.3")
	r := &Report{
		Endpoints: []Endpoint{{Name: "n1-p1", Addr: a}, {Name: "n2-p1", Addr: b}},
		Cells: []Cell{
			{From: "n1-p1", To: "n2-p1"},
			{From: "n2-p1", To: "n1-p1", TCP: "dial: connection refused"},
		},
		Checks: []Check{{Name: "mtu", Detail: "n1-p1 -> n2-p1"}, {Name: "no-nat", Detail: "d", Error: "server saw 10.0.0.1"}},
	}
	if r.Passed() != 2 || r.Failed() != 2 {
		t.Errorf("passed %d failed %d, want 2 and 2", r.Passed(), r.Failed())
	}
	var w bytes.Buffer
	r.WriteTo(&w)
	out := w.String()
	for _, want := range []string{
		"n1-p1 10.244.0.3", "FAIL(tcp)", "n2-p1 -> n1-p1 tcp: dial: connection refused",
		"ok    mtu", "FAIL  no-nat", "sim test: 2 passed, 2 failed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

// TestEchoProbe runs the client side of the helper protocol against a
// scripted server over an in-memory pipe.
func TestEchoProbe(t *testing.T) {
	tests := []struct {
		name    string
		greet   string
		echo    func([]byte) []byte
		wantErr string
		want    netip.AddrPort
	}{
		{"ok", "peer 10.244.0.3:4000\n", func(b []byte) []byte { return b }, "", netip.MustParseAddrPort("10.244.0.3:4000")},
		{"v4-mapped", "peer [::ffff:10.244.0.3]:4000\n", func(b []byte) []byte { return b }, "", netip.MustParseAddrPort("10.244.0.3:4000")},
		{"not a helper", "SSH-2.0-OpenSSH\n", nil, "not from a weft sim helper", netip.AddrPort{}},
		{"bad address", "peer nowhere\n", nil, "peer line", netip.AddrPort{}},
		{"changed data", "peer 10.0.0.1:1\n", func(b []byte) []byte { c := bytes.Clone(b); c[0]++; return c }, "came back changed", netip.AddrPort{}},
		{"short echo", "peer 10.0.0.1:1\n", func(b []byte) []byte { return b[:10] }, "read", netip.AddrPort{}},
	}
	const n = 4096
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cl, srv := net.Pipe()
			defer cl.Close()
			go func() {
				defer srv.Close()
				io.WriteString(srv, tc.greet)
				if tc.echo == nil {
					return
				}
				buf := make([]byte, n)
				if _, err := io.ReadFull(srv, buf); err != nil {
					return
				}
				srv.Write(tc.echo(buf))
			}()
			peer, err := EchoProbe(cl, n, time.Now().Add(2*time.Second))
			if tc.wantErr == "" {
				if err != nil || peer != tc.want {
					t.Errorf("peer %s, err %v; want %s", peer, err, tc.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("err %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestHelperMainUsage(t *testing.T) {
	tests := []struct {
		args []string
		want int
	}{
		{nil, 2},
		{[]string{"_nope"}, 2},
		{[]string{HelperTCPServer, "--bogus"}, 2},
		{[]string{HelperTCPClient, "--connect", "not-an-address", "--timeout", "1s"}, 1},
	}
	for _, tc := range tests {
		var out, errOut bytes.Buffer
		if got := HelperMain(tc.args, &out, &errOut); got != tc.want {
			t.Errorf("HelperMain(%q) = %d, want %d (stderr %q)", tc.args, got, tc.want, errOut.String())
		}
	}
}
