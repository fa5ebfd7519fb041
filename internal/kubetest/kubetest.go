package kubetest

import (
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/weftnet/weft/internal/kubecp"
	"github.com/weftnet/weft/internal/testenv"
)

// Options says what control plane to start: kubecp.Options with a name
// prefix in place of the namespace and directory, which kubetest picks.
// The zero value is etcd and an API server only, with kubecp's defaults.
type Options struct {
	// Prefix starts the namespace's name (testenv.UniqueName): the test's
	// own short prefix, at most 9 bytes. Default "kt".
	Prefix string
	// The rest are kubecp.Options' fields of the same names.
	ControllerManager                    bool
	ServiceCIDR, ClusterCIDR             netip.Prefix
	NodeCIDRMaskSize                     int
	Controllers                          []string
	APIServerArgs, ControllerManagerArgs []string
	StartTimeout                         time.Duration
}

const defaultPrefix = "kt"

// ToolsEnv names the environment variable holding the tools' directory.
const ToolsEnv = kubecp.ToolsEnv

// Binaries are the control plane's executables.
type Binaries = kubecp.Binaries

// FindBinaries looks for them as kubecp.FindBinaries does.
func FindBinaries() Binaries { return kubecp.FindBinaries() }

// DefaultControllers are kubecp.DefaultControllers.
var DefaultControllers = kubecp.DefaultControllers

// APIAddr is the API server's address inside its namespace.
var APIAddr = kubecp.APIAddr

// AttachLink is the name of the veth end Attach puts into a joined
// namespace.
const AttachLink = kubecp.AttachLink

// ControlPlane is a running control plane, with test helpers.
type ControlPlane struct {
	*kubecp.ControlPlane
}

// Start starts a control plane for t and stops it when t ends. Without
// root it skips t unless CI is set (testenv.RequireRoot); without the
// binaries it fails t under CI (`make test` builds them) and skips it
// otherwise. A start that fails fails t with the components' log tails.
func Start(t testing.TB, opts Options) *ControlPlane {
	t.Helper()
	testenv.RequireRoot(t)
	bins := requireBinaries(t, opts.ControllerManager)
	cp, err := New(opts, bins)
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	t.Logf("kubetest: control plane in netns %s (%s)", cp.Netns, cp.StartTimes())
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kubetest: control plane logs (%s):\n%s", cp.Dir, cp.LogTails(40))
		}
		if err := cp.Stop(); err != nil {
			t.Errorf("kubetest: stop: %v", err)
		}
	})
	return cp
}

// New starts a control plane (kubecp.Start) in a namespace named from
// opts.Prefix and a fresh directory under $TMPDIR, both recorded in the
// test ledger. Its components die with the test binary. Tests use Start or
// Shared; New is for Main and for tests of start failures.
func New(opts Options, bins Binaries) (*ControlPlane, error) {
	if err := bins.Check(opts.ControllerManager); err != nil {
		return nil, err
	}
	if opts.Prefix == "" {
		opts.Prefix = defaultPrefix
	}
	netns := testenv.UniqueName(opts.Prefix)
	dir, err := os.MkdirTemp("", netns+"-kube-")
	if err != nil {
		return nil, fmt.Errorf("control plane: %w", err)
	}
	// After a crash the next test run kills what names dir (every
	// component's command line does) and removes it.
	testenv.RecordPath(dir)
	cp, err := kubecp.Start(kubecp.Options{
		Netns:                 netns,
		Dir:                   dir,
		ControllerManager:     opts.ControllerManager,
		ServiceCIDR:           opts.ServiceCIDR,
		ClusterCIDR:           opts.ClusterCIDR,
		NodeCIDRMaskSize:      opts.NodeCIDRMaskSize,
		Controllers:           opts.Controllers,
		APIServerArgs:         opts.APIServerArgs,
		ControllerManagerArgs: opts.ControllerManagerArgs,
		StartTimeout:          opts.StartTimeout,
	}, bins)
	if err != nil {
		os.RemoveAll(dir) // Start removes what it made; a refused start made nothing
		return nil, err
	}
	return &ControlPlane{cp}, nil
}

// Clientset is a clientset for the admin (Config); it fails t if one
// cannot be made.
func (cp *ControlPlane) Clientset(t testing.TB) kubernetes.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cp.Config)
	if err != nil {
		t.Fatalf("kubetest: clientset: %v", err)
	}
	return cs
}

// requireBinaries returns the binaries, or fails t under CI (`make test`
// builds them, so their absence is a broken set-up) and skips it otherwise.
func requireBinaries(t testing.TB, controllerManager bool) Binaries {
	t.Helper()
	b := FindBinaries()
	if err := b.Check(controllerManager); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("kubetest: %v; CI=%q is set: run the tests through `make test`", err, os.Getenv("CI"))
		}
		t.Skipf("kubetest: %v", err)
	}
	return b
}
