// Package testenv holds the few rules every weft test that touches the
// kernel shares: when a root-only test may skip, and how test-made names are
// kept unique so parallel packages never collide.
package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
)

// RequireRoot skips t when the process is not root and CI is unset. Under
// CI (CI set to anything non-empty) a missing privilege fails the test:
// CI runs as root with CAP_NET_ADMIN, so a skip there would hide a broken
// set-up and present an unrun check as passing.
//
// As root it first sweeps what test processes that died without cleaning
// up left behind (SweepStale), once per process.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		SweepStale(t.Logf)
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("test needs root (CAP_NET_ADMIN) and CI=%q is set: run CI as root", os.Getenv("CI"))
	}
	t.Skip("needs root (CAP_NET_ADMIN); skipped because not root and CI is unset")
}

// UniqueName returns prefix followed by 6 random hex digits. Linux interface
// and netns names are at most 15 bytes, so keep prefix <= 9 bytes. The name
// goes into this process's ledger: should the process die before its
// cleanup, the next test run deletes the namespaces named NAME or NAME-*.
func UniqueName(prefix string) string {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	name := prefix + hex.EncodeToString(b[:])
	record("name", name)
	return name
}
