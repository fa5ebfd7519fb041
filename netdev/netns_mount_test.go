package netdev

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/testenv"
)

// netnsMountChildEnv marks the copy of the test binary that runs inside a
// private mount namespace (TestNetnsDeletableAfterIPNetnsAdd).
const netnsMountChildEnv = "WEFT_TEST_NETNS_MOUNT_CHILD"

// TestNetnsDeletableAfterIPNetnsAdd is issue 12 item 11: weft bind-mounted
// its namespaces on a plain /run/netns directory; when `ip netns add` later
// turned /run/netns into a shared mount of itself (MS_BIND|MS_REC copies
// the existing namespace mounts into it), weft's namespaces could no longer
// be removed: unlink gave "device or resource busy". NewNetns must set
// /run/netns up as iproute2 does, a shared mount point, before it mounts
// anything there.
//
// The host's /run/netns is usually already a shared mount point (any
// earlier `ip netns add` made it one), which hides the bug; so the test
// runs itself again in a private mount namespace on a fresh tmpfs /run,
// where /run/netns starts as a plain directory. Its namespaces die with
// that mount namespace, whatever happens.
func TestNetnsDeletableAfterIPNetnsAdd(t *testing.T) {
	testenv.RequireRoot(t)
	if os.Getenv(netnsMountChildEnv) != "" {
		netnsMountChild(t)
		return
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("needs iproute2's ip (make deps): %v", err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestNetnsDeletableAfterIPNetnsAdd$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), netnsMountChildEnv+"=1")
	// Go makes / recursively private in the child before exec, so
	// nothing it mounts reaches the host.
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestNetnsDeletableAfterIPNetnsAdd") {
		t.Fatalf("in a private mount namespace: %v\n%s", err, out)
	}
}

func netnsMountChild(t *testing.T) {
	run, err := filepath.EvalSymlinks(filepath.Dir(NetnsDir))
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", run, "tmpfs", 0, "mode=0755"); err != nil {
		t.Fatalf("tmpfs on %s: %v", run, err)
	}
	ours, theirs := testenv.UniqueName("r2m"), testenv.UniqueName("r2i")
	if _, err := NewNetns(ours); err != nil {
		t.Fatal(err)
	}
	if !sharedMountPoint(t, filepath.Join(run, "netns")) {
		t.Errorf("after NewNetns, %s/netns is not a shared mount point (as ip netns add makes it)", run)
	}
	if out, err := exec.Command("ip", "netns", "add", theirs).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", theirs, err, out)
	}
	if err := DeleteNetns(ours); err != nil {
		t.Errorf("DeleteNetns after ip netns add: %v", err)
	}
	if _, err := os.Stat(NetnsPath(ours)); !os.IsNotExist(err) {
		t.Errorf("%s still there after DeleteNetns: %v", NetnsPath(ours), err)
	}
	// And the other way round: ip deletes what it made next to ours.
	if _, err := NewNetns(ours); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("ip", "netns", "del", theirs).CombinedOutput(); err != nil {
		t.Errorf("ip netns del %s: %v: %s", theirs, err, out)
	}
	if err := DeleteNetns(ours); err != nil {
		t.Errorf("second DeleteNetns: %v", err)
	}
}

// sharedMountPoint reports whether dir is a mount point with shared
// propagation (a "shared:N" optional field in /proc/self/mountinfo).
func sharedMountPoint(t *testing.T, dir string) bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	shared := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - ...
		fields := strings.Fields(sc.Text())
		if len(fields) < 7 || fields[4] != dir {
			continue
		}
		shared = false // a later mount on the same point hides earlier ones
		for _, o := range fields[6:] {
			if o == "-" {
				break
			}
			if strings.HasPrefix(o, "shared:") {
				shared = true
			}
		}
	}
	return shared
}
