package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPendingFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pending")
	rels := []PendingRelease{
		{Version: pendingVersion, PodID: "abc123", IfName: "eth0", Netns: "/var/run/netns/x", Reason: "down"},
		// Not a valid CNI container ID, but the name must still stay in dir.
		{Version: pendingVersion, PodID: "../a/b%c", IfName: "net1", Reason: "down"},
	}
	for _, r := range rels {
		r.RequestedAt = time.Now().UTC()
		if err := writePending(dir, r); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "abc123@eth0")); err != nil {
		t.Errorf("pending file not at the documented name: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "%2E.%2Fa%2Fb%25c@net1")); err != nil {
		t.Errorf("escaped pending file: %v", err)
	}
	// What a reader must skip or report.
	os.WriteFile(filepath.Join(dir, ".tmp-0000-half"), []byte("{"), 0o600)
	os.WriteFile(filepath.Join(dir, "junk@eth0"), []byte("not json"), 0o600)

	got, errs := readPending(dir)
	if len(got) != len(rels) {
		t.Fatalf("read %d pending releases, want %d: %+v", len(got), len(rels), got)
	}
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "junk@eth0") {
		t.Errorf("errors %v, want one naming junk@eth0", errs)
	}
	for _, r := range got {
		if r.Version != pendingVersion || r.RequestedAt.IsZero() || r.Reason == "" {
			t.Errorf("incomplete record %+v", r)
		}
	}
	// The format weftd reads: plain JSON with these keys.
	b, err := os.ReadFile(filepath.Join(dir, "abc123@eth0"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"version", "pod_id", "ifname", "netns", "requested_at", "reason"} {
		if _, ok := m[k]; !ok {
			t.Errorf("pending file lacks %q: %s", k, b)
		}
	}
	for _, r := range rels {
		if err := removePending(dir, r.PodID, r.IfName); err != nil {
			t.Error(err)
		}
		if err := removePending(dir, r.PodID, r.IfName); err != nil {
			t.Errorf("second remove: %v", err)
		}
	}
	if got, _ := readPending(dir); len(got) != 0 {
		t.Errorf("left after remove: %+v", got)
	}
	if got, errs := readPending(filepath.Join(dir, "missing")); len(got) != 0 || len(errs) != 0 {
		t.Errorf("missing dir: %v %v", got, errs)
	}
}
