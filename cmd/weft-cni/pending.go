package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/weftnet/weft/api"
)

// pendingVersion is the format version written into every pending file.
const pendingVersion = 1

// PendingRelease is a DEL that weftd could not take because it was not
// running. DEL must succeed anyway (runtimes retry a failed DEL forever, and
// the second DEL of a pod comes without a namespace), so the release is
// written down and applied later: by weftd when it starts, or by the next
// weft-cni DEL or GC that reaches weftd.
//
// One file per attachment: <pendingDir>/<pod ID>@<ifname>, with '%', '/'
// and NUL in either part escaped as %25, %2F and %00 (the escaping of
// weftd's port records) and a leading '.' as %2E, holding this struct as
// JSON. Readers take the pod ID and ifname from the JSON, not the name. Files are written to
// a name starting with '.' and renamed into place, so a reader skips names
// starting with '.' and never sees a torn file.
type PendingRelease struct {
	Version     int       `json:"version"` // pendingVersion
	PodID       string    `json:"pod_id"`  // CNI_CONTAINERID
	IfName      string    `json:"ifname"`  // CNI_IFNAME
	Netns       string    `json:"netns,omitempty"`
	RequestedAt time.Time `json:"requested_at"`
	Reason      string    `json:"reason"`
}

var pendingEscaper = strings.NewReplacer("%", "%25", "/", "%2F", "\x00", "%00")

func pendingFile(dir, podID, ifname string) string {
	name := pendingEscaper.Replace(podID) + "@" + pendingEscaper.Replace(ifname)
	if strings.HasPrefix(name, ".") {
		name = "%2E" + name[1:] // names starting with '.' are temporary
	}
	return filepath.Join(dir, name)
}

// writePending records r durably: temp file, fsync, rename, fsync dir.
func writePending(dir string, r PendingRelease) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pending release dir: %w", err)
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("pending release %s: %w", r.PodID, err)
	}
	final := pendingFile(dir, r.PodID, r.IfName)
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	tmp := filepath.Join(dir, ".tmp-"+hex.EncodeToString(rnd[:])+"-"+filepath.Base(final))
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("pending release: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, final)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("pending release %s: %w", final, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// removePending forgets the pending release of one attachment, if any.
func removePending(dir, podID, ifname string) error {
	err := os.Remove(pendingFile(dir, podID, ifname))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove pending release: %w", err)
	}
	return nil
}

// readPending lists the pending releases in dir (none if dir is missing).
// A file that does not parse is reported and left for a person to see.
func readPending(dir string) ([]PendingRelease, []error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, []error{fmt.Errorf("read pending releases: %w", err)}
	}
	var out []PendingRelease
	var errs []error
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") || !e.Type().IsRegular() {
			continue
		}
		path := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, fmt.Errorf("pending release %s: %w", path, err))
			continue
		}
		var r PendingRelease
		if err := json.Unmarshal(b, &r); err != nil || r.PodID == "" {
			errs = append(errs, fmt.Errorf("pending release %s: not a pending release (%v)", path, err))
			continue
		}
		out = append(out, r)
	}
	return out, errs
}

// drainPending applies every pending release through cl: detach (an
// attachment already gone counts as done), then delete the file. It stops
// at the first error that says weftd is unreachable.
func drainPending(ctx context.Context, cl *api.Client, dir string) (applied int, err error) {
	rels, errs := readPending(dir)
	for _, r := range rels {
		derr := cl.Detach(ctx, api.DetachRequest{PodID: r.PodID, IfName: r.IfName})
		if derr != nil && !errors.Is(derr, api.ErrNotFound) {
			errs = append(errs, fmt.Errorf("apply pending release of %s %s: %w", r.PodID, r.IfName, derr))
			if errors.Is(derr, api.ErrNotRunning) || ctx.Err() != nil {
				break
			}
			continue
		}
		if rerr := removePending(dir, r.PodID, r.IfName); rerr != nil {
			errs = append(errs, rerr)
			continue
		}
		applied++
	}
	return applied, errors.Join(errs...)
}
