package netdev

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// OffloadLevel caps what a VnetHdr TAP asks of TUNSETOFFLOAD. Each level
// steps down the ladder if the kernel refuses it.
type OffloadLevel uint8

const (
	// OffloadAll: CSUM|TSO4|TSO6|USO4|USO6, then CSUM|TSO4|TSO6, CSUM, none.
	OffloadAll OffloadLevel = iota
	// OffloadTSO: start at CSUM|TSO4|TSO6 (no USO).
	OffloadTSO
	// OffloadCSUM: checksum offload only; the kernel segments before the
	// TAP, so Read never meets a GSO superframe.
	OffloadCSUM
	// OffloadNone: the virtio header without offloads.
	OffloadNone
)

// The ladder, most capable first. TSO_ECN is left out as wireguard-go does:
// it would oblige segmentation to clear CWR on every segment but the first.
var offloadLadder = [...]int{
	unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6 | unix.TUN_F_USO4 | unix.TUN_F_USO6,
	unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6,
	unix.TUN_F_CSUM,
	0,
}

// offloadLogged makes the first negotiation result of the process an Info
// record and later ones Debug: "logged once" without hiding it from tests.
var offloadLogged atomic.Bool

// TakesGSO reports whether a device that accepted the TUN_F_* offloads
// mask takes a frame of GSO type gso (GSONone, GSOTCPv4, ...) whole: plain
// frames always, TCP super-frames with TSO, UDP ones with USO.
func TakesGSO(offloads int, gso uint8) bool {
	switch gso {
	case GSONone:
		return true
	case GSOTCPv4:
		return offloads&unix.TUN_F_TSO4 != 0
	case GSOTCPv6:
		return offloads&unix.TUN_F_TSO6 != 0
	case GSOUDPL4:
		return offloads&unix.TUN_F_USO4 != 0
	}
	return false
}

// OffloadString names the TUN_F_* bits in mask, e.g. "csum|tso4|tso6".
func OffloadString(mask int) string {
	if mask == 0 {
		return "none"
	}
	names := []struct {
		bit  int
		name string
	}{
		{unix.TUN_F_CSUM, "csum"}, {unix.TUN_F_TSO4, "tso4"}, {unix.TUN_F_TSO6, "tso6"},
		{unix.TUN_F_TSO_ECN, "tso_ecn"}, {unix.TUN_F_UFO, "ufo"}, {unix.TUN_F_USO4, "uso4"},
		{unix.TUN_F_USO6, "uso6"},
	}
	var b []byte
	for _, n := range names {
		if mask&n.bit != 0 {
			if len(b) > 0 {
				b = append(b, '|')
			}
			b = append(b, n.name...)
			mask &^= n.bit
		}
	}
	if mask != 0 {
		b = fmt.Appendf(b, "|%#x", mask)
	}
	return string(b)
}

// negotiateOffloads steps down the ladder from cfg.MaxOffload until the
// kernel accepts a TUNSETOFFLOAD mask, and logs what it got.
func negotiateOffloads(fd int, cfg *TapConfig) (int, error) {
	offloads, lastErr := -1, error(nil)
	for _, mask := range offloadLadder[cfg.MaxOffload:] {
		if lastErr = unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, mask); lastErr == nil {
			offloads = mask
			break
		}
	}
	if offloads < 0 {
		return -1, fmt.Errorf("TUNSETOFFLOAD: %w", lastErr)
	}
	level := slog.LevelDebug
	if offloadLogged.CompareAndSwap(false, true) {
		level = slog.LevelInfo
	}
	cfg.Logger.Log(context.Background(), level, "tap offloads negotiated",
		"tap", cfg.Name, "offloads", OffloadString(offloads), "asked", OffloadString(offloadLadder[cfg.MaxOffload]))
	return offloads, nil
}
