package node

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"

	"github.com/weftnet/weft/api"
)

// pendingRelease is a CNI DEL that weft-cni recorded because weftd was not
// running (cmd/weft-cni's PendingRelease; the file format is the contract:
// one JSON file per attachment, written under a '.' name and renamed in).
type pendingRelease struct {
	Version int    `json:"version"`
	PodID   string `json:"pod_id"`
	IfName  string `json:"ifname"`
}

// applyPendingReleases detaches every port weft-cni was asked to delete
// while weftd was down, so a pod deleted meanwhile does not keep its address.
func (n *Node) applyPendingReleases() {
	dir := n.cfg.PendingReleaseDir
	ents, err := os.ReadDir(dir)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			n.log.Error("pending CNI releases", "dir", dir, "err", err)
		}
		return
	}
	for _, e := range ents {
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(path)
		var r pendingRelease
		if err == nil {
			err = json.Unmarshal(b, &r)
		}
		if err != nil || r.PodID == "" {
			n.log.Error("pending CNI release unreadable; leaving it for a person to look at", "file", path, "err", err)
			continue
		}
		err = n.Detach(context.Background(), api.DetachRequest{PodID: r.PodID, IfName: r.IfName})
		if err != nil && !errors.Is(err, api.ErrNotFound) {
			n.log.Error("pending CNI release", "pod", r.PodID, "ifname", r.IfName, "err", err)
			continue
		}
		os.Remove(path)
		n.log.Info("applied CNI release recorded while weftd was down", "pod", r.PodID, "ifname", r.IfName)
	}
}
