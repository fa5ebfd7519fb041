package sim

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/internal/childproc"
	"github.com/weftnet/weft/internal/kubecp"
	"github.com/weftnet/weft/internal/procstat"
	"github.com/weftnet/weft/netdev"
)

// weftdArgs is the command line of node n's weftd.
func (c *Cluster) weftdArgs(n *Node) []string {
	args := []string{
		"--node-name", c.Name + "-" + n.Name, "--underlay", "u0",
		"--state-dir", n.StateDir, "--socket", n.Socket, "--metrics-addr", "off",
		"--registry", c.Registry, "--registry-ttl", time.Duration(c.LeaseTTL).String(),
	}
	switch {
	case c.Registry == "file":
		args = append(args, "--registry-dir", filepath.Join(c.Dir, "registry"))
	case c.Registry == RegistryKube:
		args = append(args, "--kubeconfig", c.WeftdKubeconfig)
	default:
		args = append(args, "--etcd-endpoints", strings.Join(c.EtcdEndpoints, ","))
	}
	return append(args, c.ExtraArgs...)
}

// StartNode starts node n's weftd inside its namespace and waits until its
// API answers with a lease.
func (c *Cluster) StartNode(ctx context.Context, n *Node) error {
	logf, err := os.OpenFile(n.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("node %s log: %w", n.Name, err)
	}
	defer logf.Close()
	args := append([]string{"--net=" + netdev.NetnsPath(n.Netns), c.Weftd}, c.weftdArgs(n)...)
	cmd := exec.Command("nsenter", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	procs := "Go's default"
	if _, set := os.LookupEnv("GOMAXPROCS"); set {
		procs = "from the environment"
	} else if c.NodeCPUs > 0 {
		cmd.Env = append(os.Environ(), "GOMAXPROCS="+strconv.Itoa(c.NodeCPUs))
		procs = strconv.Itoa(c.NodeCPUs)
	}
	// nsenter execs weftd in place, so the PID is weftd's. startDaemon
	// reaps it in the background so a killed weftd does not linger as a
	// zombie.
	pid, err := c.startDaemon(cmd)
	if err != nil {
		return fmt.Errorf("node %s: start weftd: %w", n.Name, err)
	}
	n.PID = pid
	if err := c.save(); err != nil {
		return err
	}
	c.logf("node %s: weftd pid %d (GOMAXPROCS %s), log %s", n.Name, n.PID, procs, n.Log)
	if err := c.WaitReady(ctx, n, 20*time.Second); err != nil {
		return err
	}
	c.logf("node %s: ready, subnet %s, host address %s", n.Name, n.Subnet, n.HostAddr)
	return c.save()
}

// startDaemon starts cmd, tied to this process if the cluster says so
// (Options.DieWithCaller), and reaps it when it exits.
func (c *Cluster) startDaemon(cmd *exec.Cmd) (pid int, err error) {
	// Its own process group: a Ctrl-C on `weft sim up` must not kill the
	// daemons (weftd, etcd, the outside server) the sim leaves running.
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if c.dieWithCaller {
		p, err := childproc.Start(cmd)
		if err != nil {
			return 0, err
		}
		return p.Pid(), nil
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	go cmd.Wait()
	return cmd.Process.Pid, nil
}

// WaitReady polls node n's API until it reports a registry lease.
func (c *Cluster) WaitReady(ctx context.Context, n *Node, timeout time.Duration) error {
	cl := api.NewClient(n.Socket)
	defer cl.Close()
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if !pidAlive(n.PID) {
			return fmt.Errorf("node %s: weftd (pid %d) exited; see %s:\n%s", n.Name, n.PID, n.Log, tail(n.Log, 10))
		}
		qctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := cl.Status(qctx)
		cancel()
		if err == nil && st.Subnet.IsValid() {
			n.Subnet, n.HostAddr = st.Subnet, st.HostAddr
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("node %s: weftd not ready after %s: %v; see %s", n.Name, timeout, last, n.Log)
}

// Kill kills node n's weftd with SIGKILL, as a crash would.
func (c *Cluster) Kill(n *Node) error {
	if !pidAlive(n.PID) {
		return fmt.Errorf("node %s: weftd (pid %d) is not running", n.Name, n.PID)
	}
	start := procStartTime(n.PID)
	if err := syscall.Kill(n.PID, syscall.SIGKILL); err != nil {
		return fmt.Errorf("node %s: kill %d: %w", n.Name, n.PID, err)
	}
	if !waitReaped(n.PID, start, 5*time.Second) {
		if !zombieHoldsNothing(n.PID) {
			return fmt.Errorf("node %s: weftd (pid %d) killed but still exiting after 5s; its sockets may still be held", n.Name, n.PID)
		}
		c.logf("node %s: weftd (pid %d) killed; its parent has not reaped it, but all its threads are gone", n.Name, n.PID)
	}
	return nil
}

// Stop stops node n's weftd gracefully (SIGTERM).
func (c *Cluster) Stop(n *Node) error {
	if !pidAlive(n.PID) {
		return nil
	}
	start := procStartTime(n.PID)
	if err := syscall.Kill(n.PID, syscall.SIGTERM); err != nil {
		return fmt.Errorf("node %s: SIGTERM %d: %w", n.Name, n.PID, err)
	}
	if !waitReaped(n.PID, start, 10*time.Second) {
		syscall.Kill(n.PID, syscall.SIGKILL)
		waitReaped(n.PID, start, 5*time.Second)
		return fmt.Errorf("node %s: weftd did not stop within 10s of SIGTERM; killed", n.Name)
	}
	return nil
}

// Restart stops node n's weftd (gracefully) if it runs and starts it again.
func (c *Cluster) Restart(ctx context.Context, n *Node) error {
	if err := c.Stop(n); err != nil {
		return err
	}
	return c.StartNode(ctx, n)
}

// Command returns a command that runs argv inside netns (a pod's or a
// node's namespace name).
func Command(ctx context.Context, netns string, argv ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + netdev.NetnsPath(netns), "--"}, argv...)...)
}

// runIn runs a short command in a namespace of the sim.
func runIn(netns string, argv ...string) error {
	out, err := Command(context.Background(), netns, argv...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s in %s: %w: %s", strings.Join(argv, " "), netns, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func pidAlive(pid int) bool { return procstat.Alive(pid) }

// procArgs returns the command line of pid, nil if it is gone.
func procArgs(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
}

// ownsProc checks that pid is a weftd or etcd of this sim before Down
// signals it: a PID from an old record may since belong to another
// process, even to another sim's weftd. Ours name a directory of the
// sim's in their command line.
func (c *Cluster) ownsProc(pid int) bool {
	args := procArgs(pid)
	if len(args) == 0 {
		return false
	}
	bin := filepath.Base(args[0])
	for i := 1; i+1 < len(args); i++ {
		inDir := strings.HasPrefix(args[i+1], c.Dir+string(filepath.Separator))
		switch {
		case args[i] == "--state-dir" && inDir && strings.Contains(bin, "weftd"):
			return true
		case args[i] == "--data-dir" && inDir && strings.Contains(bin, "etcd"):
			return true
		case args[i] == "--sim-dir" && inDir: // the outside host's server
			return true
		}
	}
	return false
}

// unrecordedProcs lists the live processes this sim owns that its record
// does not name.
func (c *Cluster) unrecordedProcs() []int {
	known := map[int]bool{}
	for _, n := range c.Nodes {
		known[n.PID] = true
	}
	if c.Etcd != nil {
		known[c.Etcd.PID] = true
	}
	var out []int
	for _, pid := range procstat.PIDs() {
		if known[pid] || !pidAlive(pid) {
			continue
		}
		if c.Registry == RegistryKube && kubecp.Owns(pid, c.kubeDir()) {
			continue // the control plane's: stopKube ends them
		}
		if c.ownsProc(pid) {
			out = append(out, pid)
		}
	}
	return out
}

// stopPID asks pid to stop (SIGTERM) and kills it after 5 s.
func stopPID(pid int) {
	start := procStartTime(pid)
	syscall.Kill(pid, syscall.SIGTERM)
	if !waitReaped(pid, start, 5*time.Second) {
		syscall.Kill(pid, syscall.SIGKILL)
		waitReaped(pid, start, 5*time.Second)
	}
}

// waitReaped waits up to d for process pid, started at start (its
// procStartTime), to be gone from /proc: exited and reaped. A zombie is not
// enough: a multi-threaded process's leader shows 'Z' while its other
// threads are still exiting, and the files they share (weftd's API and
// VXLAN sockets) close only with the last of them, so a weftd started
// against a zombie may find its addresses in use. A /proc entry with
// another start time is a new process that reused the PID.
func waitReaped(pid int, start string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if s := procStartTime(pid); s == "" || s != start {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// zombieHoldsNothing reports whether pid is a zombie whose threads have all
// exited (only the leader left in /proc/PID/task): a zombie that its parent
// does not reap (an init that never waits) but that holds no files any more.
func zombieHoldsNothing(pid int) bool {
	tasks, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	return err == nil && len(tasks) <= 1 && !pidAlive(pid)
}

// procStartTime returns pid's start time (field 22 of /proc/PID/stat, in
// clock ticks since boot) as text, "" when there is no such process.
func procStartTime(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // the command name may hold spaces and parentheses
	if i < 0 {
		return ""
	}
	// After ")": state is field 3, so start time is the 20th field from here.
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return ""
	}
	return f[19]
}

func tail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}
