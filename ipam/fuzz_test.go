package ipam

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

const fuzzRecord = `{"v":1,"addr":"10.244.1.7","pod_id":"0a1b2c","ifname":"eth0","since":"2026-03-04T05:06:07.000000008Z","pod_namespace":"default","pod_name":"web-0"}` + "\n"

func FuzzParseRecord(f *testing.F) {
	for _, s := range []string{
		fuzzRecord,
		`{"v":1,"addr":"10.244.1.3","pod_id":"p","ifname":"eth0","since":"2026-01-01T00:00:00+02:00"}` + "\n",
		"",
		"\n",
		fuzzRecord[:len(fuzzRecord)-1],
		fuzzRecord[:40],
		`{"v":2,"addr":"10.244.1.3","pod_id":"p","ifname":"eth0","since":"2026-01-01T00:00:00Z"}` + "\n",
		`{"v":0}` + "\n",
		`{"v":1,"addr":"fd00::3","pod_id":"p","ifname":"eth0","since":"2026-01-01T00:00:00Z"}` + "\n",
		`{"v":1,"addr":"10.244.1.3","pod_id":"","ifname":"eth0","since":"2026-01-01T00:00:00Z"}` + "\n",
		`{"v":1,"addr":"10.244.1.3","pod_id":"p\u0001","ifname":"eth0","since":"2026-01-01T00:00:00Z"}` + "\n",
		`{"v":1,"addr":"10.244.1.3","pod_id":"p","ifname":"eth0","since":"yesterday"}` + "\n",
		`{"v":1,"addr":"10.244.1.3","pod_id":"p","ifname":"eth0","since":"2026-01-01T00:00:00Z"} {}` + "\n",
		"null\n",
		"[]\n",
		`{"v":1e400}` + "\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := parseRecord(data)
		if err != nil {
			return
		}
		// Whatever parses is a record this code could have written, and
		// survives a write and a read unchanged.
		if !r.Addr.Is4() || r.key().check() != nil || r.Since.IsZero() {
			t.Fatalf("parseRecord accepted an invalid record %+v", r)
		}
		enc, err := encodeRecord(&r)
		if err != nil {
			t.Fatalf("re-encode %+v: %v", r, err)
		}
		r2, err := parseRecord(enc)
		if err != nil {
			t.Fatalf("re-parse %q: %v", enc, err)
		}
		if r2.Addr != r.Addr || r2.key() != r.key() || !r2.Since.Equal(r.Since) ||
			r2.PodNamespace != r.PodNamespace || r2.PodName != r.PodName {
			t.Fatalf("round trip changed the record: %+v -> %+v", r, r2)
		}
	})
}

// FuzzOpen plants one allocation file and a cursor of fuzzed content in a
// state directory: Open must take it (as an allocation or a leak) or refuse
// a newer format, and the Allocator must stay consistent.
func FuzzOpen(f *testing.F) {
	f.Add([]byte(fuzzRecord), []byte("10.244.1.7\n"))
	f.Add([]byte(""), []byte(""))
	f.Add([]byte("\x00garbage"), []byte("10.244.1.254"))
	f.Add([]byte(`{"v":2,"addr":"10.244.1.7"}`+"\n"), []byte("x"))
	f.Add([]byte(`{"v":1,"addr":"10.244.1.8","pod_id":"p","ifname":"eth0","since":"2026-01-01T00:00:00Z"}`+"\n"), []byte("10.244.1.3\n"))
	f.Add([]byte(fuzzRecord), []byte("fd00::1"))
	f.Add([]byte(fuzzRecord), []byte("10.244.1.255"))

	subnet := netip.MustParsePrefix("10.244.1.0/24")
	planted := netip.MustParseAddr("10.244.1.7")
	pods := podRangeOf(subnet)
	f.Fuzz(func(t *testing.T, record, cursor []byte) {
		dir, _ := tmpfsDir(t)
		for name, data := range map[string][]byte{
			subnetName:       []byte(subnet.String() + "\n"),
			planted.String(): record,
			cursorName:       cursor,
		} {
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		a, err := Open(dir, subnet)
		if err != nil {
			if errors.Is(err, errNewerRecord) {
				return
			}
			t.Fatalf("Open: %v", err)
		}
		defer a.Close()
		used, free := a.Stats()
		if used != 1 || free != pods.capacity()-1 {
			t.Fatalf("Stats() = %d, %d; want 1, %d", used, free, pods.capacity()-1)
		}
		list, err := a.List()
		if err != nil {
			t.Fatal(err)
		}
		leaked := a.Leaked()
		if len(list)+len(leaked) != 1 {
			t.Fatalf("%d allocations + %d leaked, want 1 in all", len(list), len(leaked))
		}
		k := Key{PodID: "fuzz-new-pod", IfName: "eth0"}
		existing, had := a.Get(k)
		al, err := a.Allocate(k, Meta{})
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case had && al.Addr != existing.Addr:
			t.Fatalf("Allocate of the planted key = %s, want %s", al.Addr, existing.Addr)
		case !had && (al.Addr == planted || !pods.contains(al.Addr)):
			t.Fatalf("Allocate = %s, want a free pod address", al.Addr)
		}
		freed, err := a.GC(func(string, string) bool { return false })
		if err != nil {
			t.Fatal(err)
		}
		if used, _ := a.Stats(); used != 0 || len(freed) != 1+btoi(!had) {
			t.Fatalf("after GC: %d used, %d freed", used, len(freed))
		}
	})
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
