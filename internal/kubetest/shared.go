package kubetest

import (
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/weftnet/weft/internal/testenv"
)

var shared struct {
	mu      sync.Mutex
	inMain  bool
	opts    Options
	started bool
	cp      *ControlPlane
	err     error
}

// Main runs the package's tests (m.Run) with opts as the options of the
// control plane Shared starts, stops that control plane after the last
// test, and returns the exit code for os.Exit.
func Main(m *testing.M, opts Options) int {
	shared.mu.Lock()
	shared.inMain, shared.opts = true, opts
	shared.mu.Unlock()
	code := m.Run()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.cp != nil {
		if err := shared.cp.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "kubetest: stop the shared control plane: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
		shared.cp = nil
	}
	return code
}

// Shared returns the test binary's one control plane, started with Main's
// options by the first test that asks; Main stops it. It skips or fails t
// as Start does (root, binaries). If the start failed, every test asking
// fails with that error.
func Shared(t testing.TB) *ControlPlane {
	t.Helper()
	testenv.RequireRoot(t)
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if !shared.inMain {
		t.Fatal("kubetest.Shared needs the package's TestMain to call kubetest.Main")
	}
	bins := requireBinaries(t, shared.opts.ControllerManager)
	if !shared.started {
		shared.started = true
		shared.cp, shared.err = New(shared.opts, bins)
		if shared.err == nil {
			t.Logf("kubetest: shared control plane in netns %s (%s)", shared.cp.Netns, shared.cp.StartTimes())
		}
	}
	if shared.err != nil {
		t.Fatalf("kubetest: shared control plane: %v", shared.err)
	}
	return shared.cp
}
