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

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/packet"
)

// PortRecord is what weftd keeps on disk for each attached pod port, so
// that a restarted daemon re-opens the persistent TAP and the pod keeps its
// address and connections.
type PortRecord struct {
	PodID  string `json:"pod_id"`
	IfName string `json:"ifname"`
	Netns  string `json:"netns"`
	// NetnsIno is the inode of the pod's namespace at attach time: a path
	// that later names another namespace (a reused PID) is not the pod's.
	NetnsIno     uint64         `json:"netns_ino,omitempty"`
	PodNamespace string         `json:"pod_namespace,omitempty"`
	PodName      string         `json:"pod_name,omitempty"`
	Owner        string         `json:"owner,omitempty"`
	api.PodMeta                 // UID, labels, named ports: published as a Pod (pods.go)
	Addr         netip.Prefix   `json:"addr"`
	MAC          packet.MAC     `json:"mac"`
	MTU          int            `json:"mtu"`
	Since        time.Time      `json:"since"`
	Extra        map[string]any `json:"extra,omitempty"`

	// PortMappings are the pod's hostPorts: a restarted weftd writes
	// them into its nftables table again.
	PortMappings []api.PortMapping `json:"port_mappings,omitempty"`
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

// maxRecordName is the longest file name a record may have (NAME_MAX).
const maxRecordName = 255

// recordName is the file name of the record of (podID, ifname): each part
// escaped so that it holds no '@' (and nothing but [A-Za-z0-9._-] and %XX
// escapes), then the two joined by '@'. The name therefore splits back
// into exactly one pair: pod "a@x" on eth0 ("a%40x@eth0.json") and pod "a"
// on "x@eth0" ("a@x%40eth0.json") get two records. Names that would not
// fit a file name are refused (checkStorable), never shortened.
func recordName(podID, ifname string) string {
	return escapeRecordPart(podID) + "@" + escapeRecordPart(ifname) + ".json"
}

func escapeRecordPart(v string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' ||
			c == '.' && i > 0 { // a leading '.' would hide the record like a temporary file
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0xf])
	}
	return b.String()
}

// checkStorable reports whether a record for (podID, ifname) can be
// stored; Attach asks before it allocates anything.
func checkStorable(podID, ifname string) error {
	if n := len(recordName(podID, ifname)); n > maxRecordName {
		return fmt.Errorf("pod ID %.40q... and interface %q make a %d-byte record name, more than %d", podID, ifname, n, maxRecordName)
	}
	return nil
}

func (s *recordStore) recordFile(podID, ifname string) string {
	return filepath.Join(s.dir, recordName(podID, ifname))
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
		if want := recordName(r.PodID, r.IfName); e.Name() != want {
			// Written under an older naming (or renamed by hand): move it to
			// its own name, so Detach removes the record it reads.
			if err := s.rename(e.Name(), want); err != nil {
				errs = append(errs, fmt.Errorf("port record %s: %w", p, err))
				continue
			}
		}
		recs = append(recs, r)
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].Since.Before(recs[j].Since) })
	return recs, errs
}

// rename moves a record file to name, refusing to replace another one.
func (s *recordStore) rename(from, name string) error {
	to := filepath.Join(s.dir, name)
	if _, err := os.Lstat(to); err == nil {
		return fmt.Errorf("both %s and %s hold this port's record; remove the stale one by hand", from, name)
	}
	if err := os.Rename(filepath.Join(s.dir, from), to); err != nil {
		return fmt.Errorf("rename to %s: %w", name, err)
	}
	return syncDir(s.dir)
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
