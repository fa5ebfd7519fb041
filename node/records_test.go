package node

import (
	"net/netip"
	"os"
	"path/filepath"
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
