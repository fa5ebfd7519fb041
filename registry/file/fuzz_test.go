package file

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// FuzzChangeLog: whatever the change log holds, and however its appends
// are split between two polls, a watch's reader returns exactly the
// complete non-empty lines, each once per poll, and never panics.
func FuzzChangeLog(f *testing.F) {
	f.Add([]byte("node-a\nnode-b\n"), uint(7))
	f.Add([]byte("node-a\nnode-a\n\n\nnode-"), uint(3))
	f.Add([]byte("\x00\xff\n\nx"), uint(0))
	f.Fuzz(func(t *testing.T, data []byte, split uint) {
		path := filepath.Join(t.TempDir(), changeLogName)
		if err := os.WriteFile(path, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		c := changeReader{path: path}
		c.start()
		cut := int(split % uint(len(data)+1))
		var got []string
		for _, part := range [][]byte{data[:cut], data[cut:]} {
			fh, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			fh.Write(part)
			fh.Close()
			names, all := c.poll()
			if all {
				t.Fatalf("poll after an append reports the log replaced")
			}
			seen := map[string]bool{}
			for _, n := range names {
				if n == "" || strings.Contains(n, "\n") || seen[n] {
					t.Fatalf("poll returned %q in %q", n, names)
				}
				seen[n] = true
			}
			got = append(got, names...)
		}
		var want []string
		lines := strings.Split(string(data), "\n")
		for _, l := range lines[:len(lines)-1] {
			if l != "" {
				want = append(want, l)
			}
		}
		slices.Sort(got)
		slices.Sort(want)
		want = slices.Compact(want)
		got = slices.Compact(got)
		if !slices.Equal(got, want) {
			t.Fatalf("names %q, want %q", got, want)
		}
	})
}

// FuzzDecodeNodeFile: any bytes in a node file either decode into a
// record of that node with a valid subnet, which encodes and decodes back
// to itself, or are an error; salvaging a subnet never panics.
func FuzzDecodeNodeFile(f *testing.F) {
	f.Add([]byte(`{"node":"node-a","underlay":"192.0.2.1","subnet":"10.244.1.0/24","routerMAC":"02:00:00:00:00:01","vni":1,"expiry":"2030-01-01T00:00:00Z","holder":"x"}`))
	f.Add([]byte(`{"node":"node-a","subn`))
	f.Add([]byte(`{"node":"other","subnet":"10.244.3.0/24"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		salvageSubnet(b)
		rec, err := decode("node-a", b)
		if err != nil {
			return
		}
		if rec.Node != "node-a" || !rec.Subnet.IsValid() {
			t.Fatalf("decoded %+v", rec)
		}
		enc, err := encode(rec)
		if err != nil {
			t.Fatal(err)
		}
		back, err := decode("node-a", enc)
		if err != nil || !back.Lease.SameAs(rec.Lease) || !back.Lease.Expiry.Equal(rec.Lease.Expiry) || back.Holder != rec.Holder {
			t.Fatalf("round trip: %+v, %v; want %+v", back, err, rec)
		}
	})
}
