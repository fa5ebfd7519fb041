package registry_test

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/packet"
	"github.com/weftnet/weft/registry"
)

func lease(node string, underlay byte, expiry time.Time) registry.Lease {
	return registry.Lease{
		Node:      node,
		Underlay:  netip.AddrFrom4([4]byte{192, 0, 2, underlay}),
		Subnet:    netip.MustParsePrefix("10.244.1.0/24"),
		RouterMAC: packet.MAC{2, 0, 0, 0, 0, underlay},
		VNI:       1,
		Port:      4789,
		Expiry:    expiry,
	}
}

func TestDiff(t *testing.T) {
	t0 := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	a, b, c := lease("a", 1, t0), lease("b", 2, t0), lease("c", 3, t0)
	aRenewed := lease("a", 1, t0.Add(10*time.Second))
	aMoved := lease("a", 9, t0)
	type ev struct {
		typ  registry.EventType
		node string
	}
	tests := []struct {
		name       string
		prev, next []registry.Lease
		want       []ev
	}{
		{"nothing", nil, nil, nil},
		{"renewal only", []registry.Lease{a}, []registry.Lease{aRenewed}, nil},
		{"add", []registry.Lease{a}, []registry.Lease{a, b}, []ev{{registry.Added, "b"}}},
		{"remove", []registry.Lease{a, b}, []registry.Lease{b}, []ev{{registry.Removed, "a"}}},
		{"change", []registry.Lease{a, b}, []registry.Lease{aMoved, b}, []ev{{registry.Changed, "a"}}},
		{"all at once, removals first", []registry.Lease{a, c}, []registry.Lease{aMoved, b},
			[]ev{{registry.Removed, "c"}, {registry.Changed, "a"}, {registry.Added, "b"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []ev
			for _, e := range registry.Diff(registry.LeaseMap(tc.prev), registry.LeaseMap(tc.next)) {
				got = append(got, ev{e.Type, e.Lease.Node})
			}
			if len(got) != len(tc.want) {
				t.Fatalf("Diff = %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("Diff = %v, want %v", got, tc.want)
				}
			}
		})
	}
}

func TestValidateNodeName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"node-1", true},
		{"worker.example.com", true},
		{"Node_2", true},
		{"", false},
		{".", false},
		{"..", false},
		{"-x", false},
		{"a/b", false},
		{"a b", false},
		{"ä", false},
		{strings.Repeat("n", registry.MaxNodeNameLen), true},
		{strings.Repeat("n", registry.MaxNodeNameLen+1), false},
	}
	for _, tc := range tests {
		if err := registry.ValidateNodeName(tc.name); (err == nil) != tc.ok {
			t.Errorf("ValidateNodeName(%.30q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

func TestLeaseJSONRoundTrip(t *testing.T) {
	in := lease("node-a", 7, time.Date(2026, 11, 22, 12, 0, 0, 123, time.UTC))
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"underlay":"192.0.2.7"`, `"subnet":"10.244.1.0/24"`, `"routerMAC":"02:00:00:00:00:07"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("JSON %s lacks %s", b, want)
		}
	}
	var out registry.Lease
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if !out.SameAs(in) || !out.Expiry.Equal(in.Expiry) {
		t.Errorf("round trip: %+v, want %+v", out, in)
	}
}

// TestLeaseCapsCompatible: a lease without capabilities encodes exactly as
// before the field existed (no "caps" key), one with them round-trips, an
// older weftd's decoder (a struct without the field) still reads it, and an
// old lease reads as no capabilities.
func TestLeaseCapsCompatible(t *testing.T) {
	l := lease("node-a", 7, time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC))
	b, err := json.Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "caps") {
		t.Errorf("a lease without capabilities has a caps key: %s", b)
	}
	var old registry.Lease
	if err := json.Unmarshal(b, &old); err != nil || old.Caps != 0 {
		t.Errorf("old lease: caps %v, err %v", old.Caps, err)
	}
	l.Caps = registry.CapPartialCsum
	if b, err = json.Marshal(l); err != nil {
		t.Fatal(err)
	}
	var out registry.Lease
	if err := json.Unmarshal(b, &out); err != nil || !out.SameAs(l) || !out.Caps.Has(registry.CapPartialCsum) {
		t.Errorf("round trip of %s: %+v, %v", b, out, err)
	}
	var older struct {
		Node   string       `json:"node"`
		Subnet netip.Prefix `json:"subnet"`
	}
	if err := json.Unmarshal(b, &older); err != nil || older.Node != "node-a" {
		t.Errorf("an older decoder fails on %s: %v", b, err)
	}
	if registry.Caps(0).Has(registry.CapPartialCsum) || !l.Caps.Has(0) {
		t.Error("Has")
	}
}

func TestAcquireRequestDefaults(t *testing.T) {
	req, err := registry.AcquireRequest{Node: "n", Underlay: netip.MustParseAddr("192.0.2.1")}.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	if req.TTL != registry.DefaultTTL {
		t.Errorf("TTL %v, want DefaultTTL %v", req.TTL, registry.DefaultTTL)
	}
}
