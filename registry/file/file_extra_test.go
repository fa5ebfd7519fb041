package file_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/registry"
	"github.com/weftnet/weft/registry/file"
	"github.com/weftnet/weft/registry/registrytest"
)

func open(t *testing.T, dir string, log *slog.Logger) *file.Registry {
	t.Helper()
	r, err := file.Open(file.Config{Dir: dir, Options: registry.Options{Subnets: registrytest.Subnets(4), Logger: log}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func req(node string) registry.AcquireRequest {
	return registry.AcquireRequest{Node: node, Underlay: netip.MustParseAddr("192.0.2.1"), TTL: 30 * time.Second}
}

// TestSkipsJunkFiles: a corrupt record, a leftover temp file and a
// mismatched name must neither stop the registry nor count as leases. A
// node file whose subnet cannot be told at all (issue 12 item 3) blocks
// new claims, with an error naming it, until it is fixed or removed: its
// subnet may be any.
func TestSkipsJunkFiles(t *testing.T) {
	dir := t.TempDir()
	var logBuf bytes.Buffer
	r := open(t, dir, slog.New(slog.NewTextHandler(&logBuf, nil)))
	nodes := filepath.Join(dir, "nodes")
	junk := map[string]string{
		"corrupt.json":          "{not json",
		"renamed.json":          `{"node":"other","subnet":"10.244.3.0/24","expiry":"2999-01-01T00:00:00Z"}`,
		"nosubnet.json":         `{"node":"nosubnet","expiry":"2999-01-01T00:00:00Z"}`,
		".x.tmp-123":            "{partial",
		"README":                "not a record",
		".hidden.json":          `{"node":".hidden","subnet":"10.244.4.0/24","expiry":"2999-01-01T00:00:00Z"}`,
		"node-a.json.tmp-12345": "{",
	}
	for name, content := range junk {
		if err := os.WriteFile(filepath.Join(nodes, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	_, err := r.Acquire(ctx, req("node-a"))
	if !errors.Is(err, registry.ErrSubnetConflict) || !strings.Contains(err.Error(), "corrupt.json") || !strings.Contains(err.Error(), "nosubnet.json") {
		t.Fatalf("Acquire with files of unknown subnet present: %v, want ErrSubnetConflict naming corrupt.json and nosubnet.json", err)
	}
	os.Remove(filepath.Join(nodes, "corrupt.json"))
	os.Remove(filepath.Join(nodes, "nosubnet.json"))
	l, err := r.Acquire(ctx, req("node-a"))
	if err != nil {
		t.Fatalf("Acquire with junk present: %v", err)
	}
	for range 3 {
		leases, err := r.List(ctx)
		if err != nil || len(leases) != 1 || leases[0].Node != "node-a" {
			t.Fatalf("List = %+v, %v; want only node-a", leases, err)
		}
	}
	if l.Subnet != netip.MustParsePrefix("10.244.1.0/24") {
		t.Errorf("node-a got %v", l.Subnet)
	}
	if n := strings.Count(logBuf.String(), "corrupt.json"); n != 1 {
		t.Errorf("corrupt file logged %d times over several reads, want once:\n%s", n, logBuf.String())
	}
	// renamed.json still names its subnet: that stays claimed.
	for _, node := range []string{"node-b", "node-c"} {
		if l, err := r.Acquire(ctx, req(node)); err != nil || l.Subnet == netip.MustParsePrefix("10.244.3.0/24") {
			t.Errorf("%s: %+v, %v; 10.244.3.0/24 is renamed.json's", node, l, err)
		}
	}
}

// TestLockRespectsContext: a lock held elsewhere (another weftd) makes
// calls wait, and give up when their context ends.
func TestLockRespectsContext(t *testing.T) {
	dir := t.TempDir()
	r := open(t, dir, nil)
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := r.Acquire(ctx, req("node-a")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire under a held lock: err = %v, want DeadlineExceeded", err)
	}
	unix.Flock(int(f.Fd()), unix.LOCK_UN)
	if _, err := r.Acquire(context.Background(), req("node-a")); err != nil {
		t.Fatalf("Acquire after unlock: %v", err)
	}
}

// TestRecordIsDurableJSON: the node file is the lease as JSON, readable by
// a new client (another process), and no temp files are left behind.
func TestRecordIsDurableJSON(t *testing.T) {
	dir := t.TempDir()
	l, err := open(t, dir, nil).Acquire(context.Background(), req("node-a"))
	if err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(filepath.Join(dir, "nodes"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "node-a.json" {
		t.Fatalf("nodes dir holds %v, want only node-a.json", entries)
	}
	leases, err := open(t, dir, nil).List(context.Background())
	if err != nil || len(leases) != 1 || !leases[0].SameAs(l) {
		t.Fatalf("second client lists %+v, %v; want %+v", leases, err, l)
	}
}

func TestOpenNeedsDir(t *testing.T) {
	if _, err := file.Open(file.Config{}); err == nil {
		t.Error("Open with no directory succeeded")
	}
}

// TestDamagedNodeFileKeepsClaim is issue 12 item 3: a truncated or garbage
// node file was skipped when claims were counted, so its subnet looked
// free and a new node took a running node's /24; and the node whose file
// it was could never renew nor rewrite it (degraded for ever).
func TestDamagedNodeFileKeepsClaim(t *testing.T) {
	for _, damage := range []struct{ name, content string }{
		{"garbage", "\x00\x01 not json at all"},
		{"truncated", `{"node": "node-a", "underlay": "192.0.2.1", "subn`},
		{"empty", ""},
	} {
		t.Run(damage.name, func(t *testing.T) {
			dir := t.TempDir()
			ctx := context.Background()
			a := open(t, dir, nil)
			la, err := a.Acquire(ctx, req("node-a"))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "nodes", "node-a.json"), []byte(damage.content), 0o644); err != nil {
				t.Fatal(err)
			}
			other := open(t, dir, nil)
			for _, node := range []string{"node-b", "node-c"} {
				l, err := other.Acquire(ctx, req(node))
				if err != nil {
					t.Fatalf("%s: %v", node, err)
				}
				if l.Subnet == la.Subnet {
					t.Fatalf("%s got %s, node-a's subnet, while node-a's file is damaged", node, l.Subnet)
				}
			}
			// node-a's keeper: renewing tells it to acquire again, which
			// rewrites its file with its own subnet.
			if _, err := a.Renew(ctx, "node-a"); !errors.Is(err, registry.ErrLeaseLost) {
				t.Fatalf("Renew over a damaged file: %v, want ErrLeaseLost (so the keeper acquires again)", err)
			}
			l, err := a.Acquire(ctx, req("node-a"))
			if err != nil || l.Subnet != la.Subnet {
				t.Fatalf("node-a acquiring again: %+v, %v; want its %s", l, err, la.Subnet)
			}
			leases, err := other.List(ctx)
			if err != nil || len(leases) != 3 {
				t.Fatalf("List = %+v, %v; want node-a, node-b, node-c", leases, err)
			}
			seen := map[netip.Prefix]string{}
			for _, l := range leases {
				if prev, dup := seen[l.Subnet]; dup {
					t.Errorf("%s and %s both have %s", prev, l.Node, l.Subnet)
				}
				seen[l.Subnet] = l.Node
			}
		})
	}
}

// TestForgedFileCannotTakeSubnet: the claim index, not a node file, says
// who owns a subnet. A file forged to give one node another's subnet is
// not listed, and the node it names rewrites its own file with its own
// subnet at its next renewal (issue 12 items 3 and 4: a forged file made a
// node advertise one /24 while serving another).
func TestForgedFileCannotTakeSubnet(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	a, b := open(t, dir, nil), open(t, dir, nil)
	la, err := a.Acquire(ctx, req("node-a"))
	if err != nil {
		t.Fatal(err)
	}
	lb, err := b.Acquire(ctx, req("node-b"))
	if err != nil {
		t.Fatal(err)
	}
	// node-b's file rewritten to claim node-a's subnet, keeping node-b's
	// holder token (it is in the file for anyone to read).
	path := filepath.Join(dir, "nodes", "node-b.json")
	body, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	forged := strings.Replace(string(body), lb.Subnet.String(), la.Subnet.String(), 1)
	if err := os.WriteFile(path, []byte(forged), 0o644); err != nil {
		t.Fatal(err)
	}
	// And a node nobody runs, claiming node-a's subnet too.
	ghost := `{"node":"ghost","underlay":"192.0.2.9","subnet":"` + la.Subnet.String() + `","expiry":"2999-01-01T00:00:00Z","holder":"x"}`
	if err := os.WriteFile(filepath.Join(dir, "nodes", "ghost.json"), []byte(ghost), 0o644); err != nil {
		t.Fatal(err)
	}
	leases, err := open(t, dir, nil).List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range leases {
		if l.Subnet == la.Subnet && l.Node != "node-a" {
			t.Errorf("List shows %s with node-a's subnet %s", l.Node, l.Subnet)
		}
	}
	if _, err := b.Renew(ctx, "node-b"); !errors.Is(err, registry.ErrLeaseLost) {
		t.Fatalf("node-b renewing its forged file: %v, want ErrLeaseLost", err)
	}
	pinned := req("node-b")
	pinned.Subnet = lb.Subnet
	if l, err := b.Acquire(ctx, pinned); err != nil || l.Subnet != lb.Subnet {
		t.Fatalf("node-b acquiring again: %+v, %v; want its own %s", l, err, lb.Subnet)
	}
	if l, err := open(t, dir, nil).Acquire(ctx, req("node-c")); err != nil || l.Subnet == la.Subnet || l.Subnet == lb.Subnet {
		t.Fatalf("node-c: %+v, %v", l, err)
	}
}

// TestRenewNeedsNoClaimLock (issue 16): a renewal waits for nobody but an
// Acquire or Release of its own node. With the claim lock held elsewhere
// (another weftd in the middle of an Acquire, stuck on a slow fsync) a
// renewal still lands at once, while an Acquire waits; with its node's
// lock held, the renewal waits.
func TestRenewNeedsNoClaimLock(t *testing.T) {
	dir := t.TempDir()
	r := open(t, dir, nil)
	if _, err := r.Acquire(context.Background(), req("node-a")); err != nil {
		t.Fatal(err)
	}
	hold := func(path string) (release func()) {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
			t.Fatal(err)
		}
		return func() { f.Close() }
	}
	release := hold(filepath.Join(dir, "lock"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := r.Renew(ctx, "node-a"); err != nil {
		t.Errorf("Renew with the claim lock held elsewhere: %v", err)
	}
	short, cancelShort := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancelShort()
	if _, err := r.Acquire(short, req("node-b")); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Acquire with the claim lock held elsewhere: %v, want DeadlineExceeded", err)
	}
	release()

	release = hold(filepath.Join(dir, "locks", "node-a"))
	defer release()
	short2, cancelShort2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancelShort2()
	if _, err := r.Renew(short2, "node-a"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Renew with its node's lock held elsewhere: %v, want DeadlineExceeded", err)
	}
}
