package kubecluster

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/procstat"
	"github.com/weftnet/weft/netdev"
)

// record lists what a cluster made, written before each thing is made, so
// that Sweep removes it all after a crash as well as after a clean run.
type record struct {
	Name string `json:"name"`
	// Dirs are removed last; every process whose command line names one
	// of them is the cluster's (daemons, shims) and is killed by PID
	// first, and every mount below them is detached.
	Dirs []string `json:"dirs"`
	// Netns are the namespaces to delete.
	Netns []string `json:"netns"`
	// Cgroups are the nodes' cgroup roots ("/kl-n1"), made in every
	// hierarchy under /sys/fs/cgroup.
	Cgroups []string `json:"cgroups"`
}

const recordFile = "cluster.json"

func (r *record) save(dir string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, recordFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("record: %w", err)
	}
	return os.Rename(tmp, filepath.Join(dir, recordFile))
}

func loadRecord(dir string) (*record, error) {
	b, err := os.ReadFile(filepath.Join(dir, recordFile))
	if err != nil {
		return nil, err
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("record %s: %w", dir, err)
	}
	return &r, nil
}

// Sweep removes whatever the cluster recorded in dir made: processes
// naming its directories (by PID), what is left in its cgroups, mounts
// below its directories, its namespaces, the kubelet's log links and the
// directories. It is what Down runs, and what Up runs first on a
// directory a crashed run left behind. No record: nothing to do.
func Sweep(dir string) error {
	r, err := loadRecord(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	dirs := append(slices.Clone(r.Dirs), dir)
	killNaming(dirs)
	for _, cg := range r.Cgroups {
		if err := removeCgroup(cg); err != nil {
			errs = append(errs, err)
		}
	}
	for _, d := range dirs {
		unmountUnder(d)
	}
	for _, ns := range r.Netns {
		if _, err := os.Stat(netdev.NetnsPath(ns)); err == nil {
			if err := netdev.DeleteNetns(ns); err != nil {
				errs = append(errs, err)
			}
		}
	}
	removeLogLinks("/var/log/containers", dirs)
	for _, d := range dirs {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// killNaming SIGKILLs every process (not this one) whose command line
// names one of dirs, and waits (bounded) until they are gone.
func killNaming(dirs []string) {
	var pids []int
	for _, pid := range procstat.PIDs() {
		if pid == os.Getpid() {
			continue
		}
		cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		for _, d := range dirs {
			if bytes.Contains(cmdline, []byte(d+"/")) || bytes.Contains(cmdline, append([]byte(d), 0)) {
				pids = append(pids, pid)
				break
			}
		}
	}
	// containerd's shims bind their sockets in a directory containerd
	// hard-codes; the node namespaces are the cluster's own, so every
	// such socket bound in them (/proc/PID/net/unix lists a process's
	// namespace's) is the cluster's to remove once the shims are gone.
	var socks []string
	for _, pid := range pids {
		socks = append(socks, shimSockets(pid)...)
		syscall.Kill(pid, syscall.SIGKILL)
	}
	defer func() {
		for _, s := range socks {
			os.Remove(s)
		}
	}()
	for range 100 {
		alive := 0
		for _, pid := range pids {
			if procstat.Alive(pid) {
				alive++
			}
		}
		if alive == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

const shimSocketDir = "/run/containerd/s/"

// shimSockets lists the shim sockets bound in pid's network namespace.
func shimSockets(pid int) []string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/net/unix", pid))
	return parseShimSockets(b)
}

// parseShimSockets takes the paths under shimSocketDir out of a
// /proc/net/unix listing (the path is the eighth field), once each.
func parseShimSockets(b []byte) []string {
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 7 && strings.HasPrefix(f[7], shimSocketDir) && !slices.Contains(out, f[7]) {
			out = append(out, f[7])
		}
	}
	return out
}

// cgroupDirs are cg's directories in every cgroup v1 hierarchy (and the
// unified one) that has it.
func cgroupDirs(cg string) []string {
	hier, _ := filepath.Glob("/sys/fs/cgroup/*")
	var out []string
	seen := map[string]bool{}
	for _, h := range hier {
		real, err := filepath.EvalSymlinks(h)
		if err != nil || seen[real] {
			continue
		}
		seen[real] = true
		if st, err := os.Stat(real); err == nil && st.IsDir() {
			out = append(out, filepath.Join(real, cg))
		}
	}
	return out
}

// removeCgroup kills (by PID) what is left in the cgroup tree cg (pod
// processes whose shim is gone) and removes its directories, deepest
// first, in every hierarchy.
func removeCgroup(cg string) error {
	var errs []error
	for _, root := range cgroupDirs(cg) {
		var dirs []string
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for _, d := range dirs {
			b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		slices.SortFunc(dirs, func(a, b string) int { return len(b) - len(a) })
		for _, d := range dirs {
			var err error
			for range 40 {
				if err = unix.Rmdir(d); err == nil || errors.Is(err, unix.ENOENT) {
					err = nil
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
			}
		}
	}
	return errors.Join(errs...)
}

// unmountUnder detaches every mount at or below dir, deepest first (the
// kubelet's rshared root, pod volumes, sandbox namespaces, container root
// filesystems).
func unmountUnder(dir string) {
	for range 3 { // a detach can uncover a mount below it
		mnts := mountsUnder(dir)
		if len(mnts) == 0 {
			return
		}
		for _, m := range mnts {
			unix.Unmount(m, unix.MNT_DETACH)
		}
	}
}

func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var mnts []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && (fields[4] == dir || strings.HasPrefix(fields[4], dir+"/")) {
			mnts = append(mnts, fields[4])
		}
	}
	slices.SortFunc(mnts, func(a, b string) int { return len(b) - len(a) })
	return mnts
}

// removeLogLinks removes the links the kubelets made in logDir (a path
// kubelet hard-codes) that point into one of dirs.
func removeLogLinks(logDir string, dirs []string) {
	ents, _ := os.ReadDir(logDir)
	for _, e := range ents {
		p := filepath.Join(logDir, e.Name())
		target, err := os.Readlink(p)
		if err != nil {
			continue
		}
		for _, d := range dirs {
			if strings.HasPrefix(target, d+"/") {
				os.Remove(p)
				break
			}
		}
	}
}
