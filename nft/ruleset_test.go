package nft

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/nftables/userdata"
)

func TestCheckHostPorts(t *testing.T) {
	pod := netip.MustParseAddr("10.244.1.5")
	a1 := netip.MustParseAddr("192.0.2.1")
	a2 := netip.MustParseAddr("192.0.2.2")
	hp := func(proto string, host netip.Addr, port uint16) HostPort {
		return HostPort{Proto: proto, HostIP: host, Port: port, Pod: pod, PodPort: 80, Owner: "eg-a"}
	}
	any := netip.Addr{}
	tests := []struct {
		name      string
		have, add []HostPort
		want      string // "" = ok; else a substring of the error
		taken     bool
	}{
		{name: "free", have: []HostPort{hp(TCP, any, 80)}, add: []HostPort{hp(TCP, any, 81)}},
		{name: "other protocol", have: []HostPort{hp(TCP, any, 80)}, add: []HostPort{hp(UDP, any, 80)}},
		{name: "other host IP", have: []HostPort{hp(TCP, a1, 80)}, add: []HostPort{hp(TCP, a2, 80)}},
		{name: "same", have: []HostPort{hp(TCP, any, 80)}, add: []HostPort{hp(TCP, any, 80)}, want: "tcp 80 on every node address is taken by eg-a", taken: true},
		{name: "any over specific", have: []HostPort{hp(TCP, a1, 80)}, add: []HostPort{hp(TCP, any, 80)}, want: "taken", taken: true},
		{name: "specific over any", have: []HostPort{hp(SCTP, any, 80)}, add: []HostPort{hp(SCTP, a2, 80)}, want: "taken", taken: true},
		{name: "twice in one request", add: []HostPort{hp(UDP, any, 53), hp(UDP, any, 53)}, want: "given twice"},
		{name: "bad protocol", add: []HostPort{hp("icmp", any, 1)}, want: `protocol "icmp"`},
		{name: "port 0", add: []HostPort{hp(TCP, any, 0)}, want: "hostPort 0"},
		{name: "container port 0", add: []HostPort{{Proto: TCP, Port: 1, Pod: pod}}, want: "containerPort 0"},
		{name: "IPv6 host IP", add: []HostPort{hp(TCP, netip.MustParseAddr("2001:db8::1"), 80)}, want: "IPv4-only"},
		{name: "unspecified host IP", add: []HostPort{hp(TCP, netip.IPv4Unspecified(), 80)}, want: "give none"},
		{name: "loopback host IP", add: []HostPort{hp(TCP, netip.MustParseAddr("127.0.0.1"), 80)}},
		{name: "loopback beside node address", have: []HostPort{hp(TCP, netip.MustParseAddr("127.0.0.1"), 80)}, add: []HostPort{hp(TCP, a1, 80)}},
		{name: "no pod address", add: []HostPort{{Proto: TCP, Port: 1, PodPort: 1}}, want: "not IPv4"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckHostPorts(tc.have, tc.add)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("err = %v, want none", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("err = %v, want one containing %q", err, tc.want)
			case errors.Is(err, ErrPortTaken) != tc.taken:
				t.Errorf("errors.Is(err, ErrPortTaken) = %v, want %v", !tc.taken, tc.taken)
			}
		})
	}
}

func TestRulesetCheck(t *testing.T) {
	ok := Ruleset{HostIface: "weft0", Cluster: netip.MustParsePrefix("10.244.0.0/16")}
	if err := ok.check(); err != nil {
		t.Fatalf("a plain ruleset: %v", err)
	}
	for name, mut := range map[string]func(*Ruleset){
		"no iface":      func(r *Ruleset) { r.HostIface = "" },
		"long iface":    func(r *Ruleset) { r.HostIface = "weft0123456789012" },
		"no cluster":    func(r *Ruleset) { r.Cluster = netip.Prefix{} },
		"v6 cluster":    func(r *Ruleset) { r.Cluster = netip.MustParsePrefix("fd00::/64") },
		"v6 nonmasq":    func(r *Ruleset) { r.NonMasquerade = []netip.Prefix{netip.MustParsePrefix("fd00::/64")} },
		"bad host port": func(r *Ruleset) { r.HostPorts = []HostPort{{Proto: "gre"}} },
	} {
		rs := ok
		mut(&rs)
		if err := rs.check(); err == nil {
			t.Errorf("%s: check passed", name)
		}
	}
}

func TestCommentOf(t *testing.T) {
	good := userdata.AppendString(userdata.AppendUint32(nil, 7, 1), userdata.TypeComment, "weft: x")
	for _, tc := range []struct {
		ud   []byte
		want string
	}{
		{good, "weft: x"},
		{nil, ""},
		{[]byte{0}, ""},
		{[]byte{0, 200, 'a'}, ""}, // length past the end: no panic
		{comment(strings.Repeat("z", 300)), strings.Repeat("z", maxComment)},
	} {
		if got := commentOf(tc.ud); got != tc.want {
			t.Errorf("commentOf(%q) = %q, want %q", tc.ud, got, tc.want)
		}
	}
}
