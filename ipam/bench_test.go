package ipam

import (
	"fmt"
	"net/netip"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// tmpfsDir returns a fresh directory on tmpfs (/dev/shm) when there is one,
// else the test's temporary directory: fsync on tmpfs is free, so the
// figures measure the allocator rather than the disk.
func tmpfsDir(tb testing.TB) (dir string, onTmpfs bool) {
	tb.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs("/dev/shm", &st); err == nil && st.Type == unix.TMPFS_MAGIC {
		if dir, err := os.MkdirTemp("/dev/shm", "weft-ipam-"); err == nil {
			tb.Cleanup(func() { os.RemoveAll(dir) })
			return dir, true
		}
	}
	return tb.TempDir(), false
}

// BenchmarkAllocateRelease measures one pod's attach and detach: a durable
// Allocate followed by a durable Release.
func BenchmarkAllocateRelease(b *testing.B) {
	cases := []struct {
		name   string
		tmpfs  bool
		subnet string
		inUse  int // allocations held throughout, so the scan skips them
	}{
		{"tmpfs/empty", true, "10.244.1.0/24", 0},
		{"tmpfs/busy", true, "10.244.1.0/24", 200},
		{"disk/empty", false, "10.244.1.0/24", 0},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			dir := b.TempDir()
			if c.tmpfs {
				var ok bool
				if dir, ok = tmpfsDir(b); !ok {
					b.Skip("no tmpfs at /dev/shm")
				}
			}
			a := openT(b, dir, c.subnet)
			for i := range c.inUse {
				mustAllocate(b, a, Key{PodID: fmt.Sprint("held-", i), IfName: "eth0"})
			}
			keys := make([]Key, 1024)
			for i := range keys {
				keys[i] = key(i)
			}
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				k := keys[n%len(keys)]
				if _, err := a.Allocate(k, Meta{}); err != nil {
					b.Fatal(err)
				}
				if err := a.Release(k); err != nil {
					b.Fatal(err)
				}
				n++
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "allocs/s")
		})
	}
}

// BenchmarkReload measures reading a full /24 state directory: what Open
// costs at start-up, and what an Allocator pays after another process
// changed the directory.
func BenchmarkReload(b *testing.B) {
	dir, _ := tmpfsDir(b)
	subnet := netip.MustParsePrefix("10.244.1.0/24")
	a := openT(b, dir, subnet.String())
	for i := range podRangeOf(subnet).capacity() {
		mustAllocate(b, a, key(i))
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := loadState(dir, podRangeOf(subnet)); err != nil {
			b.Fatal(err)
		}
	}
}
