package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/weftnet/weft/packet"
)

// PortRecord is what weftd keeps on disk for each attached pod port, so
// that a restarted daemon re-opens the persistent TAP and the pod keeps its
// address and connections.
type PortRecord struct {
	PodID        string         `json:"pod_id"`
	IfName       string         `json:"ifname"`
	Netns        string         `json:"netns"`
	PodNamespace string         `json:"pod_namespace,omitempty"`
	PodName      string         `json:"pod_name,omitempty"`
	Owner        string         `json:"owner,omitempty"`
	Addr         netip.Prefix   `json:"addr"`
	MAC          packet.MAC     `json:"mac"`
	MTU          int            `json:"mtu"`
	Since        time.Time      `json:"since"`
	Extra        map[string]any `json:"extra,omitempty"`
}

// recordStore keeps one JSON file per port under dir. Writes are
// write-temp, fsync, rename, fsync dir: a crash leaves the old record or the
// new one, never a torn file.
type recordStore struct{ dir string }

func openRecordStore(dir string) (*recordStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("port records: %w", err)
	}
	return &recordStore{dir: dir}, nil
}

// recordFile names a record by pod ID and interface; both are escaped so a
// pod ID can never walk out of the directory.
func (s *recordStore) recordFile(podID, ifname string) string {
	esc := func(v string) string {
		r := strings.NewReplacer("/", "%2F", "%", "%25", "\x00", "%00")
		return r.Replace(v)
	}
	return filepath.Join(s.dir, esc(podID)+"@"+esc(ifname)+".json")
}

func (s *recordStore) put(r PortRecord) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("port record %s: %w", r.PodID, err)
	}
	return writeFileAtomic(s.recordFile(r.PodID, r.IfName), b)
}

func (s *recordStore) remove(podID, ifname string) error {
	err := os.Remove(s.recordFile(podID, ifname))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove port record %s/%s: %w", podID, ifname, err)
	}
	return syncDir(s.dir)
}

// list returns every readable record; unreadable ones are returned as
// errors so the daemon can log them instead of silently forgetting a port.
func (s *recordStore) list() ([]PortRecord, []error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, []error{fmt.Errorf("read port records: %w", err)}
	}
	var recs []PortRecord
	var errs []error
	for _, e := range ents {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		p := filepath.Join(s.dir, e.Name())
		b, err := os.ReadFile(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("port record %s: %w", p, err))
			continue
		}
		var r PortRecord
		if err := json.Unmarshal(b, &r); err != nil || r.PodID == "" || !r.Addr.IsValid() {
			errs = append(errs, fmt.Errorf("port record %s: unreadable (%v)", p, err))
			continue
		}
		recs = append(recs, r)
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].Since.Before(recs[j].Since) })
	return recs, errs
}

func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("rename %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("fsync dir %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync dir %s: %w", dir, err)
	}
	return nil
}
