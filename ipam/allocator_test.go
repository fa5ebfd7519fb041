package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func openT(t testing.TB, dir string, subnet string) *Allocator {
	t.Helper()
	a, err := Open(dir, netip.MustParsePrefix(subnet))
	if err != nil {
		t.Fatalf("Open(%s, %s): %v", dir, subnet, err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func key(i int) Key { return Key{PodID: fmt.Sprintf("pod-%d", i), IfName: "eth0"} }

func mustAllocate(t testing.TB, a *Allocator, k Key) Allocation {
	t.Helper()
	al, err := a.Allocate(k, Meta{})
	if err != nil {
		t.Fatalf("Allocate(%s): %v", k, err)
	}
	return al
}

func TestOpenSubnetValidation(t *testing.T) {
	tests := []struct {
		subnet   string
		capacity int
		wantErr  string
	}{
		{subnet: "10.244.1.0/24", capacity: 252},
		{subnet: "10.244.1.0/29", capacity: 4},
		{subnet: "10.244.1.0/30", capacity: 0},
		{subnet: "10.244.0.0/16", capacity: 65532},
		{subnet: "10.244.1.0/31", wantErr: "too small"},
		{subnet: "10.244.1.0/32", wantErr: "too small"},
		{subnet: "10.240.0.0/12", wantErr: "too large"},
		{subnet: "10.244.1.0/16", wantErr: "did you mean 10.244.0.0/16?"},
		{subnet: "fd00::/120", wantErr: "IPv6"},
	}
	for _, tt := range tests {
		t.Run(tt.subnet, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "ipam")
			a, err := Open(dir, netip.MustParsePrefix(tt.subnet))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Open(%s) error = %v, want one containing %q", tt.subnet, err, tt.wantErr)
				}
				if _, serr := os.Stat(dir); serr == nil {
					t.Errorf("Open(%s) failed but created %s", tt.subnet, dir)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open(%s): %v", tt.subnet, err)
			}
			defer a.Close()
			if used, free := a.Stats(); used != 0 || free != tt.capacity {
				t.Errorf("Stats() = %d, %d; want 0, %d", used, free, tt.capacity)
			}
			fi, err := os.Stat(dir)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o700 {
				t.Errorf("state dir mode = %v, want 0700", fi.Mode().Perm())
			}
		})
	}
}

// TestExhaustReservedNeverHandedOut fills subnets of several sizes: every
// pod address once, never a reserved one, then the exact exhaustion error.
func TestExhaustReservedNeverHandedOut(t *testing.T) {
	tests := []struct {
		subnet  string
		wantErr string
	}{
		{"10.244.1.0/30", "10.244.1.0/30 exhausted: 0 of 0 in use"},
		{"10.244.1.8/29", "10.244.1.8/29 exhausted: 4 of 4 in use"},
		{"10.244.1.16/28", "10.244.1.16/28 exhausted: 12 of 12 in use"},
		{"10.244.1.0/24", "10.244.1.0/24 exhausted: 252 of 252 in use"},
	}
	for _, tt := range tests {
		t.Run(tt.subnet, func(t *testing.T) {
			subnet := netip.MustParsePrefix(tt.subnet)
			a := openT(t, t.TempDir(), tt.subnet)
			size := 1 << (32 - subnet.Bits())
			reserved := map[netip.Addr]string{
				subnet.Addr():    "network",
				Gateway(subnet):  "gateway",
				HostAddr(subnet): "host",
				u32ToAddr(addrToU32(subnet.Addr()) + uint32(size) - 1): "broadcast",
			}
			seen := map[netip.Addr]Key{}
			var err error
			for i := 0; i <= size; i++ {
				var al Allocation
				al, err = a.Allocate(key(i), Meta{})
				if err != nil {
					break
				}
				if what, ok := reserved[al.Addr]; ok {
					t.Fatalf("Allocate(%s) = %s, the %s address", key(i), al.Addr, what)
				}
				if !subnet.Contains(al.Addr) {
					t.Fatalf("Allocate(%s) = %s, outside %s", key(i), al.Addr, subnet)
				}
				if prev, dup := seen[al.Addr]; dup {
					t.Fatalf("%s handed out to %s and %s", al.Addr, prev, key(i))
				}
				seen[al.Addr] = key(i)
				if al.Prefix != netip.PrefixFrom(al.Addr, subnet.Bits()) || al.Gateway != Gateway(subnet) {
					t.Fatalf("allocation %+v: wrong prefix or gateway", al)
				}
			}
			if len(seen) != size-4 {
				t.Errorf("%d addresses handed out, want %d", len(seen), size-4)
			}
			if err == nil || err.Error() != tt.wantErr {
				t.Fatalf("error after filling = %v, want %q", err, tt.wantErr)
			}
			if !errors.Is(err, ErrExhausted) {
				t.Errorf("errors.Is(%v, ErrExhausted) = false", err)
			}
			// An existing key still gets its address from a full subnet.
			if len(seen) > 0 {
				if _, err := a.Allocate(key(0), Meta{}); err != nil {
					t.Errorf("repeat Allocate in a full subnet: %v", err)
				}
			}
		})
	}
}

func TestAllocateIdempotent(t *testing.T) {
	a := openT(t, t.TempDir(), "10.244.1.0/24")
	clock := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	a.now = func() time.Time { clock = clock.Add(time.Second); return clock }

	k := Key{PodID: "0123abcd", IfName: "eth0"}
	first, err := a.Allocate(k, Meta{PodNamespace: "default", PodName: "web-1"})
	if err != nil {
		t.Fatal(err)
	}
	again, err := a.Allocate(k, Meta{PodNamespace: "other", PodName: "renamed"})
	if err != nil {
		t.Fatal(err)
	}
	if again != first {
		t.Errorf("repeated Allocate = %+v, want the first %+v", again, first)
	}
	if first.PodNamespace != "default" || first.PodName != "web-1" {
		t.Errorf("meta = %q/%q, want default/web-1", first.PodNamespace, first.PodName)
	}
	other, err := a.Allocate(Key{PodID: k.PodID, IfName: "net1"}, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	if other.Addr == first.Addr {
		t.Errorf("second interface of the pod got the same address %s", other.Addr)
	}
	if got, ok := a.Get(k); !ok || got != first {
		t.Errorf("Get(%s) = %+v, %v; want %+v", k, got, ok, first)
	}
	if _, ok := a.Get(Key{PodID: "nobody", IfName: "eth0"}); ok {
		t.Error("Get of an unknown key succeeded")
	}
	if used, free := a.Stats(); used != 2 || free != 250 {
		t.Errorf("Stats() = %d, %d; want 2, 250", used, free)
	}
}

func TestKeyAndMetaValidation(t *testing.T) {
	a := openT(t, t.TempDir(), "10.244.1.0/24")
	long := strings.Repeat("x", maxKeyField+1)
	tests := []struct {
		name string
		key  Key
		meta Meta
	}{
		{"empty pod ID", Key{IfName: "eth0"}, Meta{}},
		{"empty ifname", Key{PodID: "p"}, Meta{}},
		{"invalid UTF-8", Key{PodID: "p\xff", IfName: "eth0"}, Meta{}},
		{"control character", Key{PodID: "p\n", IfName: "eth0"}, Meta{}},
		{"too long", Key{PodID: long, IfName: "eth0"}, Meta{}},
		{"bad namespace", Key{PodID: "p", IfName: "eth0"}, Meta{PodNamespace: "a\x00b"}},
		{"long name", Key{PodID: "p", IfName: "eth0"}, Meta{PodName: long}},
	}
	for _, tt := range tests {
		if al, err := a.Allocate(tt.key, tt.meta); err == nil {
			t.Errorf("%s: Allocate(%q) = %s, want an error", tt.name, tt.key, al.Addr)
		}
	}
	if used, _ := a.Stats(); used != 0 {
		t.Errorf("%d addresses used after only invalid requests", used)
	}
}

// TestReleaseRoundRobin walks a /29 (pods .3-.6): a freed address is handed
// out only after the others.
func TestReleaseRoundRobin(t *testing.T) {
	a := openT(t, t.TempDir(), "10.244.1.0/29")
	steps := []struct {
		op   string // "a" allocate, "r" release
		key  int
		want string // address for "a"
	}{
		{"a", 1, "10.244.1.3"},
		{"a", 2, "10.244.1.4"},
		{"r", 1, ""},
		{"a", 3, "10.244.1.5"}, // not .3, freed just now
		{"a", 4, "10.244.1.6"},
		{"a", 5, "10.244.1.3"}, // wrapped round to the freed one
		{"r", 4, ""},
		{"r", 4, ""},  // twice: idempotent
		{"r", 99, ""}, // never allocated
		{"a", 6, "10.244.1.6"},
		{"r", 2, ""},
		{"a", 7, "10.244.1.4"},
	}
	for i, s := range steps {
		switch s.op {
		case "a":
			al := mustAllocate(t, a, key(s.key))
			if al.Addr != netip.MustParseAddr(s.want) {
				t.Fatalf("step %d: Allocate(%s) = %s, want %s", i, key(s.key), al.Addr, s.want)
			}
		case "r":
			if err := a.Release(key(s.key)); err != nil {
				t.Fatalf("step %d: Release(%s): %v", i, key(s.key), err)
			}
			if _, ok := a.Get(key(s.key)); ok {
				t.Fatalf("step %d: %s still allocated after Release", i, key(s.key))
			}
		}
	}
}

func TestPersistenceAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	a, err := Open(dir, netip.MustParsePrefix("10.244.1.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := a.Allocate(key(i), Meta{PodNamespace: "ns", PodName: fmt.Sprint("p", i)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, i := range []int{2, 5, 9} {
		if err := a.Release(key(i)); err != nil {
			t.Fatal(err)
		}
	}
	before, err := a.List()
	if err != nil {
		t.Fatal(err)
	}
	usedBefore, freeBefore := a.Stats()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}

	b := openT(t, dir, "10.244.1.0/24")
	after, err := b.List()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(before, after, sameAllocation) {
		t.Fatalf("after reopen List() =\n%v\nwant\n%v", after, before)
	}
	if used, free := b.Stats(); used != usedBefore || free != freeBefore {
		t.Errorf("after reopen Stats() = %d, %d; want %d, %d", used, free, usedBefore, freeBefore)
	}
	// The cursor survived: the next address follows .12 (key 9's, released),
	// not the lowest free one (.5, key 2's).
	if al := mustAllocate(t, b, key(100)); al.Addr != netip.MustParseAddr("10.244.1.13") {
		t.Errorf("first allocation after reopen = %s, want 10.244.1.13", al.Addr)
	}
}

func sameAllocation(x, y Allocation) bool {
	return x.Key == y.Key && x.Addr == y.Addr && x.Prefix == y.Prefix && x.Gateway == y.Gateway &&
		x.Since.Equal(y.Since) && x.PodNamespace == y.PodNamespace && x.PodName == y.PodName
}

func TestSubnetMismatch(t *testing.T) {
	dir := t.TempDir()
	a := openT(t, dir, "10.244.1.0/24")
	mustAllocate(t, a, key(1))
	a.Close()

	_, err := Open(dir, netip.MustParsePrefix("10.244.2.0/24"))
	if !errors.Is(err, ErrSubnetMismatch) {
		t.Fatalf("Open with another subnet: error = %v, want ErrSubnetMismatch", err)
	}
	for _, s := range []string{dir, "10.244.1.0/24", "10.244.2.0/24"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not name %s", err, s)
		}
	}
	// Same network, other length: also another subnet.
	if _, err := Open(dir, netip.MustParsePrefix("10.244.0.0/16")); !errors.Is(err, ErrSubnetMismatch) {
		t.Errorf("Open with /16: error = %v, want ErrSubnetMismatch", err)
	}
}

func TestOpenRejectsForeignState(t *testing.T) {
	rec := func(addr string, v int) string {
		return fmt.Sprintf(`{"v":%d,"addr":%q,"pod_id":"p","ifname":"eth0","since":"2026-01-01T00:00:00Z"}`+"\n", v, addr)
	}
	tests := []struct {
		name    string
		files   map[string]string
		wantErr string
	}{
		{"address of another subnet", map[string]string{"10.244.2.5": rec("10.244.2.5", 1)}, "unexpected entry"},
		{"gateway address file", map[string]string{"10.244.1.1": rec("10.244.1.1", 1)}, "unexpected entry"},
		{"broadcast address file", map[string]string{"10.244.1.255": rec("10.244.1.255", 1)}, "unexpected entry"},
		{"IPv6 name", map[string]string{"fd00::5": "x"}, "unexpected entry"},
		{"newer record version", map[string]string{"10.244.1.5": rec("10.244.1.5", 2)}, "newer weft"},
		{"damaged subnet file", map[string]string{subnetName: "10.244.1.0/2x\n"}, "damaged"},
		{"subnet file without allocations", map[string]string{subnetName: "10.244.9.0/24\n"}, "not 10.244.1.0/24"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, content := range tt.files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			a, err := Open(dir, netip.MustParsePrefix("10.244.1.0/24"))
			if err == nil {
				a.Close()
				t.Fatalf("Open succeeded, want an error containing %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Open error = %v, want one containing %q", err, tt.wantErr)
			}
			// A refused directory is not claimed for the subnet.
			if _, planted := tt.files[subnetName]; !planted {
				if _, err := os.Stat(filepath.Join(dir, subnetName)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("refused directory got a %s file: %v", subnetName, err)
				}
			}
		})
	}
}

// TestLeakedFiles plants the damage a crash or a hand edit leaves and checks
// that it stays reserved until GC frees it.
func TestLeakedFiles(t *testing.T) {
	dir := t.TempDir()
	a := openT(t, dir, "10.244.1.0/24")
	good := mustAllocate(t, a, key(1)) // .3
	a.Close()

	const since = `"since":"2026-01-01T00:00:00Z"`
	planted := map[string]string{
		"10.244.1.4": "",                                                                             // claimed, crashed before the write
		"10.244.1.5": `{"v":1,"addr":"10.244.1.5","pod_id":"p5"`,                                     // torn write
		"10.244.1.6": `{"v":1,"addr":"10.244.1.7","pod_id":"p6","ifname":"eth0",` + since + "}\n",    // renamed by hand
		"10.244.1.7": `{"v":1,"addr":"10.244.1.7","pod_id":"pod-1","ifname":"eth0",` + since + "}\n", // key 1 twice
		"10.244.1.8": "\x00\x01\x02 not json\n",
		"10.244.1.9": `{"v":1,"addr":"10.244.1.9","pod_id":"","ifname":"eth0",` + since + "}\n", // empty key
	}
	for name, content := range planted {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	b := openT(t, dir, "10.244.1.0/24")
	var want []netip.Addr
	for name := range planted {
		want = append(want, netip.MustParseAddr(name))
	}
	slices.SortFunc(want, netip.Addr.Compare)
	if got := b.Leaked(); !slices.Equal(got, want) {
		t.Fatalf("Leaked() = %v, want %v", got, want)
	}
	if used, free := b.Stats(); used != 1+len(planted) || free != 252-used {
		t.Errorf("Stats() = %d, %d; want %d used", used, free, 1+len(planted))
	}
	if got, ok := b.Get(key(1)); !ok || got.Addr != good.Addr {
		t.Errorf("Get(key 1) = %v, %v; want %s (the lower of the duplicates)", got.Addr, ok, good.Addr)
	}
	if al := mustAllocate(t, b, key(2)); al.Addr != netip.MustParseAddr("10.244.1.10") {
		t.Errorf("Allocate skipping leaked addresses = %s, want 10.244.1.10", al.Addr)
	}

	freed, err := b.GC(func(string, string) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	var freedAddrs []netip.Addr
	for _, f := range freed {
		if f.Key != (Key{}) {
			t.Errorf("GC freed %s with key %s, want an empty key for a leaked file", f.Addr, f.Key)
		}
		freedAddrs = append(freedAddrs, f.Addr)
	}
	if !slices.Equal(freedAddrs, want) {
		t.Errorf("GC freed %v, want %v", freedAddrs, want)
	}
	if got := b.Leaked(); len(got) != 0 {
		t.Errorf("Leaked() after GC = %v", got)
	}
	for _, name := range slices.Collect(mapKeys(planted)) {
		if _, err := os.Stat(filepath.Join(dir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still on disk after GC: %v", name, err)
		}
	}
	if used, _ := b.Stats(); used != 2 {
		t.Errorf("used after GC = %d, want 2", used)
	}
}

func mapKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func TestGCFreesDeadOwners(t *testing.T) {
	a := openT(t, t.TempDir(), "10.244.1.0/24")
	var all []Allocation
	for i := range 8 {
		all = append(all, mustAllocate(t, a, key(i)))
	}
	liveSet := map[string]bool{"pod-0": true, "pod-3": true, "pod-7": true}
	freed, err := a.GC(func(podID, ifname string) bool {
		if ifname != "eth0" {
			t.Errorf("live called with ifname %q", ifname)
		}
		return liveSet[podID]
	})
	if err != nil {
		t.Fatal(err)
	}
	var want []Allocation
	for _, al := range all {
		if !liveSet[al.PodID] {
			want = append(want, al)
		}
	}
	if !slices.EqualFunc(freed, want, sameAllocation) {
		t.Errorf("GC freed %v, want %v", freed, want)
	}
	list, err := a.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, al := range list {
		if !liveSet[al.PodID] {
			t.Errorf("%s of dead %s survived GC", al.Addr, al.Key)
		}
	}
	if len(list) != len(liveSet) {
		t.Errorf("%d allocations after GC, want %d", len(list), len(liveSet))
	}
	// Nothing to free: no change, no error.
	if freed, err := a.GC(func(string, string) bool { return true }); err != nil || len(freed) != 0 {
		t.Errorf("second GC = %v, %v; want nothing", freed, err)
	}
}

func TestClosed(t *testing.T) {
	a := openT(t, t.TempDir(), "10.244.1.0/24")
	mustAllocate(t, a, key(1))
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := a.Allocate(key(2), Meta{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Allocate after Close: %v, want ErrClosed", err)
	}
	if err := a.Release(key(1)); !errors.Is(err, ErrClosed) {
		t.Errorf("Release after Close: %v, want ErrClosed", err)
	}
	if _, err := a.List(); !errors.Is(err, ErrClosed) {
		t.Errorf("List after Close: %v, want ErrClosed", err)
	}
	if _, err := a.GC(func(string, string) bool { return false }); !errors.Is(err, ErrClosed) {
		t.Errorf("GC after Close: %v, want ErrClosed", err)
	}
	if _, ok := a.Get(key(1)); ok {
		t.Error("Get after Close succeeded")
	}
	if used, free := a.Stats(); used != 0 || free != 0 {
		t.Errorf("Stats after Close = %d, %d", used, free)
	}
}

// TestTwoAllocatorsOneDir checks that each instance sees what the other did:
// the generation counter must make them re-read.
func TestTwoAllocatorsOneDir(t *testing.T) {
	dir := t.TempDir()
	a := openT(t, dir, "10.244.1.0/24")
	b := openT(t, dir, "10.244.1.0/24")

	x := mustAllocate(t, a, key(1))
	if got, ok := b.Get(key(1)); !ok || got.Addr != x.Addr {
		t.Fatalf("b.Get = %v, %v; want %s", got.Addr, ok, x.Addr)
	}
	if y := mustAllocate(t, b, key(1)); y.Addr != x.Addr {
		t.Fatalf("b.Allocate of a's key = %s, want %s", y.Addr, x.Addr)
	}
	y := mustAllocate(t, b, key(2))
	if y.Addr == x.Addr {
		t.Fatalf("both instances handed out %s", x.Addr)
	}
	if err := b.Release(key(1)); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.Get(key(1)); ok {
		t.Error("a still sees key 1 after b released it")
	}
	// a continues round robin after b's last allocation, not its own.
	z := mustAllocate(t, a, key(3))
	if want := u32ToAddr(addrToU32(y.Addr) + 1); z.Addr != want {
		t.Errorf("a allocated %s after b's %s, want %s", z.Addr, y.Addr, want)
	}
	if ua, _ := a.Stats(); ua != 2 {
		t.Errorf("a: used = %d, want 2", ua)
	}
}

// TestConcurrentGoroutines runs allocations and releases from many
// goroutines over two Allocators on one directory (mutex and flock both in
// play); run it with -race.
func TestConcurrentGoroutines(t *testing.T) {
	const workers, perWorker = 8, 20
	dir := t.TempDir()
	allocators := []*Allocator{openT(t, dir, "10.244.1.0/24"), openT(t, dir, "10.244.1.0/24")}

	type result struct {
		k    Key
		addr netip.Addr
	}
	results := make(chan result, workers*perWorker)
	errs := make(chan error, workers*perWorker)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			a := allocators[w%len(allocators)]
			for i := range perWorker {
				k := Key{PodID: fmt.Sprintf("w%d-%d", w, i), IfName: "eth0"}
				al, err := a.Allocate(k, Meta{})
				if err != nil {
					errs <- err
					return
				}
				// Release every third right away, so frees race with claims.
				if i%3 == 0 {
					if err := a.Release(k); err != nil {
						errs <- err
						return
					}
					continue
				}
				results <- result{k, al.Addr}
			}
		})
	}
	wg.Wait()
	close(results)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	byAddr := map[netip.Addr]Key{}
	for r := range results {
		if prev, dup := byAddr[r.addr]; dup {
			t.Fatalf("%s held by both %s and %s", r.addr, prev, r.k)
		}
		byAddr[r.addr] = r.k
	}
	for _, a := range allocators {
		list, err := a.List()
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != len(byAddr) {
			t.Fatalf("List() has %d allocations, want %d", len(list), len(byAddr))
		}
		for _, al := range list {
			if byAddr[al.Addr] != al.Key {
				t.Errorf("%s on disk for %s, handed out to %s", al.Addr, al.Key, byAddr[al.Addr])
			}
		}
	}
}
