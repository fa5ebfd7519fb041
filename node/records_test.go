package node

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/packet"
)

func TestRecordStoreRoundTrip(t *testing.T) {
	s, err := openRecordStore(filepath.Join(t.TempDir(), "ports"))
	if err != nil {
		t.Fatal(err)
	}
	recs := []PortRecord{
		{PodID: "a", IfName: "eth0", Netns: "/var/run/netns/a", Addr: netip.MustParsePrefix("10.244.1.3/24"),
			MAC: PodMAC(netip.MustParseAddr("10.244.1.3")), MTU: 1450, Since: time.Unix(100, 0).UTC()},
		// IDs that would escape the directory or collide after naive joining.
		{PodID: "../../etc/x", IfName: "eth0", Addr: netip.MustParsePrefix("10.244.1.4/24"), Since: time.Unix(200, 0).UTC()},
		{PodID: "b%2Fc", IfName: "net1", Addr: netip.MustParsePrefix("10.244.1.5/24"), Since: time.Unix(300, 0).UTC()},
		{PodID: "b/c", IfName: "net1", Addr: netip.MustParsePrefix("10.244.1.6/24"), Since: time.Unix(400, 0).UTC()},
	}
	for _, r := range recs {
		if err := s.put(r); err != nil {
			t.Fatalf("put %s: %v", r.PodID, err)
		}
	}
	got, errs := s.list()
	if len(errs) != 0 {
		t.Fatalf("list errors: %v", errs)
	}
	if len(got) != len(recs) {
		t.Fatalf("listed %d records, want %d: %+v", len(got), len(recs), got)
	}
	for i := range recs {
		if got[i].PodID != recs[i].PodID || got[i].Addr != recs[i].Addr || got[i].MAC != recs[i].MAC || !got[i].Since.Equal(recs[i].Since) {
			t.Errorf("record %d: got %+v want %+v", i, got[i], recs[i])
		}
	}
	ents, _ := os.ReadDir(s.dir)
	for _, e := range ents {
		if filepath.Base(e.Name()) != e.Name() || e.IsDir() {
			t.Errorf("unexpected entry %q in the record dir", e.Name())
		}
	}
	if err := s.remove("b/c", "net1"); err != nil {
		t.Fatal(err)
	}
	if err := s.remove("b/c", "net1"); err != nil {
		t.Fatalf("second remove: %v", err)
	}
	got, _ = s.list()
	if len(got) != len(recs)-1 {
		t.Fatalf("after remove: %d records, want %d", len(got), len(recs)-1)
	}
	for _, r := range got {
		if r.PodID == "b/c" {
			t.Fatal("removed record still listed")
		}
	}
}

func TestRecordStoreReportsCorruptRecords(t *testing.T) {
	s, err := openRecordStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.put(PortRecord{PodID: "good", IfName: "eth0", Addr: netip.MustParsePrefix("10.244.1.3/24")}); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{
		"torn@eth0.json":   `{"pod_id": "torn", "addr": "10.2`,
		"empty@eth0.json":  ``,
		"noaddr@eth0.json": `{"pod_id": "noaddr"}`,
	} {
		if err := os.WriteFile(filepath.Join(s.dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// A leftover temporary file from a crash mid-write is not a record.
	os.WriteFile(filepath.Join(s.dir, ".tmp-123"), []byte("{"), 0o600)
	got, errs := s.list()
	if len(got) != 1 || got[0].PodID != "good" {
		t.Errorf("records = %+v, want only the good one", got)
	}
	if len(errs) != 3 {
		t.Errorf("errors = %v, want one per corrupt record (3)", errs)
	}
}

func TestIdentityDerivation(t *testing.T) {
	a, b := RouterMAC("node-a"), RouterMAC("node-b")
	if a == b {
		t.Fatal("two node names gave one router MAC")
	}
	if a != RouterMAC("node-a") {
		t.Fatal("router MAC is not stable for one name")
	}
	for _, m := range []packet.MAC{a, HostMAC("node-a"), PodMAC(netip.MustParseAddr("10.244.1.3"))} {
		if m.IsMulticast() || m[0]&0x02 == 0 {
			t.Errorf("%s: want a locally administered unicast MAC", m)
		}
	}
	if HostMAC("node-a") == a {
		t.Error("host port MAC equals the router MAC")
	}
	if got := PodMAC(netip.MustParseAddr("10.244.1.3")).String(); got != "0a:58:0a:f4:01:03" {
		t.Errorf("PodMAC = %s, want 0a:58:0a:f4:01:03", got)
	}
}

// TestRecordNamesUnambiguous is issue 12 item 1: pod "a@x" on eth0 and pod
// "a" on interface "x@eth0" once mapped to one record file, so after a
// restart one of them had no record and IPAM GC freed its address while
// its TAP still held it.
func TestRecordNamesUnambiguous(t *testing.T) {
	s, err := openRecordStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	recs := []PortRecord{
		{PodID: "a@x", IfName: "eth0", Addr: netip.MustParsePrefix("10.244.1.3/24"), Since: time.Unix(100, 0).UTC()},
		{PodID: "a", IfName: "x@eth0", Addr: netip.MustParsePrefix("10.244.1.4/24"), Since: time.Unix(200, 0).UTC()},
		{PodID: "a%40x", IfName: "eth0", Addr: netip.MustParsePrefix("10.244.1.5/24"), Since: time.Unix(300, 0).UTC()},
		{PodID: "a@", IfName: "x@eth0", Addr: netip.MustParsePrefix("10.244.1.6/24"), Since: time.Unix(400, 0).UTC()},
		{PodID: ".hidden", IfName: "eth0", Addr: netip.MustParsePrefix("10.244.1.7/24"), Since: time.Unix(500, 0).UTC()},
		{PodID: "nl\nid", IfName: "eth0", Addr: netip.MustParsePrefix("10.244.1.8/24"), Since: time.Unix(600, 0).UTC()},
	}
	for _, r := range recs {
		if err := s.put(r); err != nil {
			t.Fatalf("put %q: %v", r.PodID, err)
		}
	}
	got, errs := s.list()
	if len(errs) != 0 {
		t.Fatalf("list errors: %v", errs)
	}
	if len(got) != len(recs) {
		t.Fatalf("listed %d records for %d distinct ports: %+v", len(got), len(recs), got)
	}
	for i := range recs {
		if got[i].PodID != recs[i].PodID || got[i].IfName != recs[i].IfName || got[i].Addr != recs[i].Addr {
			t.Errorf("record %d: got %q/%q %s, want %q/%q %s", i, got[i].PodID, got[i].IfName, got[i].Addr,
				recs[i].PodID, recs[i].IfName, recs[i].Addr)
		}
	}
	// Removing one leaves the other.
	if err := s.remove("a", "x@eth0"); err != nil {
		t.Fatal(err)
	}
	got, _ = s.list()
	if len(got) != len(recs)-1 || got[0].PodID != "a@x" {
		t.Fatalf("after removing a/x@eth0: %+v", got)
	}
}

// TestRecordMigratesOldName: a record written under the old naming (only
// '/', '%' and NUL escaped) is moved to its new name when listed, so that
// Detach, which removes by the new name, really removes it.
func TestRecordMigratesOldName(t *testing.T) {
	s, err := openRecordStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(s.dir, "p:q@eth0.json")
	if err := os.WriteFile(old, []byte(`{"pod_id":"p:q","ifname":"eth0","addr":"10.244.1.3/24"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	got, errs := s.list()
	if len(errs) != 0 || len(got) != 1 || got[0].PodID != "p:q" {
		t.Fatalf("list = %+v, %v", got, errs)
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("old-named record still there (%v)", err)
	}
	if err := s.remove("p:q", "eth0"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.list(); len(got) != 0 {
		t.Fatalf("record survived its removal: %+v", got)
	}
}

func TestRecordStorable(t *testing.T) {
	for _, tc := range []struct {
		pod, ifname string
		ok          bool
	}{
		{"c0ffee", "eth0", true},
		{strings.Repeat("a", 240), "eth0", true},
		{strings.Repeat("a", 250), "eth0", false}, // 250 + "@eth0.json" > NAME_MAX
		{strings.Repeat("@", 80), "eth0", true},
		{strings.Repeat("@", 90), "eth0", false}, // escaped to 270 bytes
	} {
		err := checkStorable(tc.pod, tc.ifname)
		if (err == nil) != tc.ok {
			t.Errorf("checkStorable(%d bytes, %q) = %v, want ok=%v", len(tc.pod), tc.ifname, err, tc.ok)
		}
		if err == nil {
			s, _ := openRecordStore(t.TempDir())
			if err := s.put(PortRecord{PodID: tc.pod, IfName: tc.ifname, Addr: netip.MustParsePrefix("10.244.1.3/24")}); err != nil {
				t.Errorf("storable record not stored: %v", err)
			}
		}
	}
}

func TestCheckNetnsPath(t *testing.T) {
	extra := []string{"/var/lib/ctd/netns"}
	for _, tc := range []struct {
		path string
		ok   bool
	}{
		{"/run/netns/p1", true},
		{"/var/run/netns/cni-1234", true},
		{"/proc/42/ns/net", true},
		{"/var/lib/ctd/netns/cni-1", true},
		{"../../proc/42/ns/net", false},
		{"proc/42/ns/net", false},
		{"/run/netns/../netns/p1", false},
		{"/run/netns/", false},
		{"/run/netns/a/b", false},
		{"/proc/self/ns/net", false},
		{"/proc/42/task/42/ns/net", false},
		{"/proc/42/ns/mnt", false},
		{"/tmp/p1", false},
		{"/var/lib/ctd/netns2/x", false},
	} {
		if err := checkNetnsPath(tc.path, extra); (err == nil) != tc.ok {
			t.Errorf("checkNetnsPath(%q) = %v, want ok=%v", tc.path, err, tc.ok)
		}
	}
}
