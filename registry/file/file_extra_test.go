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
// mismatched name must neither stop the registry nor count as leases.
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
