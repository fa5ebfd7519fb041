package api

import (
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestTraceRequestNormalize(t *testing.T) {
	dst := netip.MustParseAddr("10.244.2.3")
	tests := []struct {
		name      string
		req       TraceRequest
		wantField string // "" = valid
		check     func(TraceRequest) bool
	}{
		{"defaults", TraceRequest{In: "p", Dst: dst}, "", func(r TraceRequest) bool { return r.Proto == ProtoICMP && r.TTL == 64 }},
		{"keeps ttl", TraceRequest{In: "p", Dst: dst, TTL: 1}, "", func(r TraceRequest) bool { return r.TTL == 1 }},
		{"udp", TraceRequest{In: "p", Dst: dst, Proto: ProtoUDP, SPort: 1000, DPort: 53}, "", nil},
		{"frame only", TraceRequest{In: "p", Frame: make([]byte, 60)}, "", nil},
		{"no in", TraceRequest{Dst: dst}, "in", nil},
		{"no dst", TraceRequest{In: "p"}, "dst", nil},
		{"ipv6 dst", TraceRequest{In: "p", Dst: netip.MustParseAddr("fd00::1")}, "dst", nil},
		{"ipv6 src", TraceRequest{In: "p", Dst: dst, Src: netip.MustParseAddr("fd00::1")}, "src", nil},
		{"icmp with port", TraceRequest{In: "p", Dst: dst, DPort: 80}, "sport", nil},
		{"tcp without dport", TraceRequest{In: "p", Dst: dst, Proto: ProtoTCP}, "dport", nil},
		{"bad proto", TraceRequest{In: "p", Dst: dst, Proto: "gre"}, "proto", nil},
		{"bad size", TraceRequest{In: "p", Dst: dst, Size: 70000}, "size", nil},
		{"frame and dst", TraceRequest{In: "p", Dst: dst, Frame: make([]byte, 60)}, "frame", nil},
		{"huge frame", TraceRequest{In: "p", Frame: make([]byte, MaxTraceFrame+1)}, "frame", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.req.Normalize()
			if tc.wantField == "" {
				if err != nil {
					t.Fatalf("Normalize() = %v, want nil", err)
				}
				if tc.check != nil && !tc.check(tc.req) {
					t.Errorf("after Normalize: %+v", tc.req)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.wantField || !errors.Is(err, ErrBadRequest) {
				t.Errorf("Normalize() = %v, want a bad request naming %q", err, tc.wantField)
			}
		})
	}
}

func TestAttachRequestNormalize(t *testing.T) {
	tests := []struct {
		name      string
		req       AttachRequest
		wantField string
	}{
		{"ok", AttachRequest{PodID: "abc", Netns: "/proc/1/ns/net"}, ""},
		{"no pod id", AttachRequest{Netns: "/n"}, "pod_id"},
		{"long pod id", AttachRequest{PodID: strings.Repeat("a", 257), Netns: "/n"}, "pod_id"},
		{"nul in pod id", AttachRequest{PodID: "a\x00b", Netns: "/n"}, "pod_id"},
		{"no netns", AttachRequest{PodID: "abc"}, "netns"},
		{"long ifname", AttachRequest{PodID: "abc", Netns: "/n", IfName: "abcdefghijklmnop"}, "ifname"},
		{"dot ifname", AttachRequest{PodID: "abc", Netns: "/n", IfName: ".."}, "ifname"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.req.Normalize()
			var fe *FieldError
			switch {
			case tc.wantField == "" && err != nil:
				t.Errorf("Normalize() = %v", err)
			case tc.wantField == "" && tc.req.IfName != DefaultIfName:
				t.Errorf("IfName = %q, want default %q", tc.req.IfName, DefaultIfName)
			case tc.wantField != "" && (!errors.As(err, &fe) || fe.Field != tc.wantField):
				t.Errorf("Normalize() = %v, want a bad request naming %q", err, tc.wantField)
			}
		})
	}
}

// TestWireNames pins the JSON field names scripts rely on.
func TestWireNames(t *testing.T) {
	tests := []struct {
		name string
		v    any
		want []string
	}{
		{"status", wantStatus, []string{`"node":`, `"underlay":"192.168.50.10"`, `"router_mac":"02:aa:00:00:00:01"`, `"cluster_cidr":"10.244.0.0/16"`, `"uptime":"1m30s"`, `"registry":{"backend":"etcd","state":"degraded"`, `"host_addr":`}},
		{"port", wantPorts[0], []string{`"pod_id":"c0ffee"`, `"tap_name":`, `"rx_frames":10`, `"address":"10.244.1.3/24"`}},
		{"local route omits peer fields", wantRoutes[0], []string{`{"prefix":"10.244.1.0/24","kind":"local"}`}},
		{"peer route", wantRoutes[1], []string{`"via":"192.168.50.11"`, `"peer":"node-b"`, `"peer_mac":"02:aa:00:00:00:02"`}},
		{"subnet unknown", wantSubnets[1], []string{`"used":-1`, `"free":-1`, `"self":false`}},
		{"trace frame", TraceRequest{In: "p", Frame: []byte{1, 2, 3}}, []string{`{"in":"p","frame":"AQID"}`}},
		{"error", Error{Error: "x", Code: CodeNotFound}, []string{`{"error":"x","code":"not_found"}`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := json.Marshal(tc.v)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(b), w) {
					t.Errorf("%s\nlacks %s", b, w)
				}
			}
		})
	}
}

func TestDurationText(t *testing.T) {
	for _, d := range []time.Duration{0, 1500 * time.Millisecond, 26 * time.Hour} {
		b, err := json.Marshal(Duration(d))
		if err != nil {
			t.Fatal(err)
		}
		var back Duration
		if err := json.Unmarshal(b, &back); err != nil || time.Duration(back) != d {
			t.Errorf("%v -> %s -> %v, %v", d, b, back, err)
		}
	}
	var d Duration
	if err := json.Unmarshal([]byte(`"soon"`), &d); err == nil {
		t.Error(`Unmarshal("soon") succeeded`)
	}
}
