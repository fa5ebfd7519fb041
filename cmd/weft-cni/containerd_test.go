package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/internal/childproc"
	"github.com/weftnet/weft/internal/kubecluster"
	"github.com/weftnet/weft/internal/testenv"
	"github.com/weftnet/weft/netdev"
	"github.com/weftnet/weft/nft"
	"github.com/weftnet/weft/sim"
)

// The tests in this file run containerd (Debian's containerd and runc) as
// the CNI caller: the CRI plugin, as under the kubelet, and `ctr run
// --cni`. They need the Debian packages containerd, runc and
// busybox-static and are skipped without them (also under CI: the
// Makefile does not install them). Everything containerd writes goes to a
// temporary root, except the paths it hard-codes (shim sockets in
// /run/containerd/s, cgroups, go-cni's cache in /var/lib/cni), which the
// tests remove when they created them.

// containerd is one containerd daemon running in a sim node's namespace.
type containerd struct {
	root   string // temporary root: config, state, sockets, CNI config
	socket string
	pid    int
}

func needContainerd(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t)
	var missing []string
	for _, bin := range []string{"containerd", "ctr", "runc", "busybox", "containerd-shim-runc-v2"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin)
		}
	}
	if len(missing) > 0 {
		msg := fmt.Sprintf("containerd test needs %v: run `make deps` (apt-get install containerd runc busybox-static)", missing)
		if os.Getenv("CI") != "" {
			t.Fatal(msg) // under CI a skip would present an unrun check as passing
		}
		t.Skip(msg)
	}
}

// startContainerd starts containerd in the namespace of node n with the CRI
// plugin calling the plugins in binDir with conflist; it is stopped and
// everything it left removed at the end of the test.
func startContainerd(t *testing.T, n *sim.Node, binDir string, conflist []byte) *containerd {
	t.Helper()
	// A fixed root, so that its CRI's namespace directory is the one the
	// sim's weftds accept (ctdNetnsDir).
	root := ctdRoot
	if err := os.Mkdir(root, 0o700); err != nil {
		t.Fatal(err)
	}
	testenv.RecordPath(root) // if this test is killed, the next run stops what names root and removes it
	c := &containerd{root: root, socket: filepath.Join(root, "containerd.sock")}
	undo := hostPathsUndo(t)
	t.Cleanup(func() {
		c.stop(t)
		unmountUnder(t, root)
		undo()
		os.RemoveAll(root)
	})
	confDir := filepath.Join(root, "cni-conf")
	os.MkdirAll(confDir, 0o755)
	if err := os.WriteFile(filepath.Join(confDir, "10-weft.conflist"), conflist, 0o644); err != nil {
		t.Fatal(err)
	}
	config := kubecluster.ContainerdConfig(kubecluster.ContainerdFiles{
		Dir: root, Socket: c.socket, SandboxImage: "docker.io/wcn/pause:latest", CNIBin: binDir, CNIConf: confDir,
	})
	cfgPath := filepath.Join(root, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(root, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	// In the node's namespace: the CRI runs the plugins from its own.
	cmd := exec.Command("nsenter", "--net="+netdev.NetnsPath(n.Netns), "containerd", "--config", cfgPath, "--log-level", "info")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p, err := childproc.Start(cmd) // dies with the test binary
	if err != nil {
		t.Fatal(err)
	}
	c.pid = p.Pid()
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(root, "containerd.log"))
			t.Logf("--- containerd log (last 4000 bytes):\n%s", tailBytes(b, 4000))
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if err := exec.Command("ctr", "-a", c.socket, "version").Run(); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd did not come up within 20s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	return c
}

func (c *containerd) ctr(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ctr", append([]string{"-a", c.socket}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// stop stops containerd and the shims it started (found by our socket in
// their command lines), each by PID.
func (c *containerd) stop(t *testing.T) {
	if c.pid > 0 {
		stopPID(c.pid)
		c.pid = 0
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if bytes.Contains(cmdline, []byte("containerd-shim")) && bytes.Contains(cmdline, []byte(c.socket)) {
			t.Logf("stopping leftover shim pid %d", pid)
			stopPID(pid)
		}
	}
}

func stopPID(pid int) {
	syscall.Kill(pid, syscall.SIGTERM)
	for range 50 {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	syscall.Kill(pid, syscall.SIGKILL)
}

// unmountUnder detaches every mount below dir, deepest first (sandbox
// namespaces and container root filesystems).
func unmountUnder(t *testing.T, dir string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	var mnts []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			mnts = append(mnts, fields[4])
		}
	}
	slices.SortFunc(mnts, func(a, b string) int { return len(b) - len(a) })
	for _, m := range mnts {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			t.Logf("unmount %s: %v", m, err)
		}
	}
}

// killCgroup kills, by PID, whatever is left in the cgroups of container
// id in containerd namespace ns (a "runc init" waiting for a start that
// never comes, when a run failed half-way), and removes those cgroups.
func killCgroup(t *testing.T, ns, id string) {
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/*", ns, id))
	for _, d := range dirs {
		b, _ := os.ReadFile(filepath.Join(d, "tasks"))
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				t.Logf("killing pid %d left in %s", pid, d)
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	for _, d := range dirs {
		for range 20 {
			if err := unix.Rmdir(d); err == nil || errors.Is(err, unix.ENOENT) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// hostPathsUndo notes which of containerd's hard-coded host paths exist
// now; the returned func removes those that did not (empty cgroup parents
// only; files under them are containerd's own to remove).
func hostPathsUndo(t *testing.T) func() {
	paths := []string{"/run/containerd", "/var/lib/cni"}
	cg, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, d := range cg {
		paths = append(paths, filepath.Join(d, "k8s.io"), filepath.Join(d, "wcn"))
	}
	var created []string
	for _, p := range paths {
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			created = append(created, p)
		}
	}
	return func() {
		for _, p := range created {
			if strings.HasPrefix(p, "/sys/fs/cgroup/") {
				if err := unix.Rmdir(p); err != nil && !errors.Is(err, unix.ENOENT) {
					t.Logf("remove cgroup %s: %v", p, err)
				}
				continue
			}
			os.RemoveAll(p)
		}
	}
}

// TestContainerdCRI: containerd's CRI plugin, driven by a tiny kubelet
// stand-in (testdata/critools), calls weft-cni as it would under the
// kubelet: RunPodSandbox attaches the sandbox through weftd, the pod
// reaches the sim's pods on both nodes, and the other node reaches it at
// its node's address:hostPort (the PodSandboxConfig's port mapping, passed
// as runtimeConfig.portMappings); StopPodSandbox and RemovePodSandbox (its
// second DEL, without a namespace) detach it and take the mapping away.
func TestContainerdCRI(t *testing.T) {
	needContainerd(t)
	c := simCluster(t)
	n1 := c.Nodes[0]
	cl := weftdClient(t, n1.Socket)
	criclient, binDir := critools(t)
	ctd := startContainerd(t, n1, binDir, shippedConflist(t, n1.Socket, t.TempDir()))

	img := filepath.Join(ctd.root, "pause.tar")
	busyboxImage(t, img, "docker.io/wcn/pause:latest", []string{"/bin/sleep", "2147483647"})
	ctd.ctr(t, "-n", "k8s.io", "images", "import", img)

	cri := func(args ...string) map[string]any {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, criclient, append([]string{"-endpoint", ctd.socket}, args...)...).CombinedOutput()
		t.Logf("criclient %s -> %s", strings.Join(args, " "), bytes.TrimSpace(out))
		if err != nil {
			t.Fatalf("criclient %s: %v", strings.Join(args, " "), err)
		}
		var m map[string]any
		if err := json.Unmarshal(out, &m); err != nil {
			t.Fatalf("criclient %s: %v", args[0], err)
		}
		return m
	}
	st := cri("status")
	if nr, _ := st["NetworkReady"].(map[string]any); nr == nil || nr["status"] != true {
		t.Errorf("CRI NetworkReady = %v, want true", st["NetworkReady"])
	}
	uid := testenv.UniqueName("wcnuid")
	// A hostPort, as the kubelet asks for one: the CRI passes it to
	// weft-cni as runtimeConfig.portMappings because the shipped conflist
	// declares the portMappings capability.
	const containerPort, hostPort = 7780, 8080
	sb := cri("run", "wcn-pod", "wcn-ns", uid, fmt.Sprintf("%d:%d/tcp", containerPort, hostPort))
	id, _ := sb["id"].(string)
	ipStr, _ := sb["ip"].(string)
	ip, err := netip.ParseAddr(ipStr)
	if err != nil || id == "" {
		t.Fatalf("sandbox %v: no ID or IP", sb)
	}
	t.Cleanup(func() {
		// Idempotent: a sandbox already stopped and removed answers ok.
		for _, verb := range []string{"stop", "rm"} {
			exec.Command(criclient, "-endpoint", ctd.socket, "-timeout", "20s", verb, id).Run()
		}
		killCgroup(t, "k8s.io", id)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cl.Detach(ctx, api.DetachRequest{PodID: id, IfName: "eth0"})
	})
	p, ok := findPort(t, cl, id)
	if !ok {
		t.Fatalf("weftd has no port for sandbox %s", id)
	}
	if p.IP != ip || p.PodNamespace != "wcn-ns" || p.PodName != "wcn-pod" {
		t.Errorf("weftd port %s %s/%s; CRI says %s for wcn-ns/wcn-pod", p.IP, p.PodNamespace, p.PodName, ip)
	}
	if !strings.HasPrefix(p.Netns, ctd.root+"/") {
		t.Errorf("sandbox netns %s is not under containerd's state dir", p.Netns)
	}
	for _, dst := range []string{c.Nodes[0].Pods[0].IP().String(), c.Nodes[1].Pods[0].IP().String()} {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		out, err := exec.CommandContext(ctx, "nsenter", "--net="+p.Netns, "ping", "-c", "2", "-i", "0.2", "-W", "3", dst).CombinedOutput()
		cancel()
		if err != nil {
			t.Errorf("ping %s from the sandbox: %v\n%s", dst, err, out)
		} else {
			t.Logf("ping %s from the sandbox: ok", dst)
		}
	}
	want := api.PortMapping{HostPort: hostPort, ContainerPort: containerPort, Protocol: "tcp"}
	if len(p.PortMappings) != 1 || p.PortMappings[0] != want {
		t.Errorf("weftd's port for %s maps %+v, want %s", id, p.PortMappings, want)
	}
	// The sandbox's pod, reached at its node's address:hostPort from the
	// other node, sees that node's own address.
	var ln net.Listener
	if err := netdev.Do(p.Netns, func() (err error) { ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", containerPort)); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go sim.ServeEcho(ln)
	n2 := c.Nodes[1]
	front := netip.AddrPortFrom(n1.Underlay, hostPort)
	if seen, err := hostPortProbe(n2.Netns, front); err != nil || seen != n2.Underlay {
		t.Errorf("node n2 -> %s: the sandbox saw %s (err %v), want n2's own %s", front, seen, err, n2.Underlay)
	}
	if rules := hostPortRules(t, n1.Netns, id); len(rules) == 0 {
		t.Errorf("no hostPort rule for %s in n1's table ip %s", id, nft.DefaultName)
	}
	cri("stop", id)
	if _, ok := findPort(t, cl, id); ok {
		t.Errorf("weftd still has %s after StopPodSandbox", id)
	}
	// Refused by n1's own kernel (nothing listens on 8080 there), not
	// lost on the way to a pod that is gone: the DNAT went with the port.
	if _, err := hostPortProbe(n2.Netns, front); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("%s after StopPodSandbox: err %v, want connection refused", front, err)
	}
	if rules := hostPortRules(t, n1.Netns, id); len(rules) > 0 {
		t.Errorf("n1's table ip %s still has %q after StopPodSandbox", nft.DefaultName, rules)
	}
	cri("rm", id)
}

// hostPortRules returns the comments of the rules in the ports chain of
// weftd's table in namespace netns that name pod id (weftd writes each
// hostPort rule's owner into its comment).
func hostPortRules(t *testing.T, netns, id string) []string {
	t.Helper()
	fd, err := os.Open(netdev.NetnsPath(netns))
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	conn, err := nftables.New(nftables.WithNetNSFd(int(fd.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	rules, err := conn.GetRules(&nftables.Table{Name: nft.DefaultName, Family: nftables.TableFamilyIPv4}, &nftables.Chain{Name: "ports"})
	if err != nil {
		t.Fatalf("list the ports chain in %s: %v", netns, err)
	}
	var out []string
	for _, r := range rules {
		// The comment may be cut at nft's limit: match the ID's head.
		if c, ok := userdata.GetString(r.UserData, userdata.TypeComment); ok && strings.Contains(c, "pod "+id[:min(16, len(id))]) {
			out = append(out, c)
		}
	}
	return out
}

// hostPortProbe dials front from namespace netns and returns the peer
// address the echo server behind it saw.
func hostPortProbe(netns string, front netip.AddrPort) (netip.Addr, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := sim.DialIn(ctx, netns, "tcp4", front.String())
	if err != nil {
		return netip.Addr{}, err
	}
	defer conn.Close()
	peer, err := sim.EchoProbe(conn, 4096, time.Now().Add(3*time.Second))
	return peer.Addr(), err
}

// critools builds what the containerd tests need besides weft-cni, from
// testdata/critools, a module of its own so that the CRI API stays out of
// weft's go.mod: criclient, and the reference loopback plugin, which
// containerd 1.6 runs for every sandbox (as kubelet nodes have it from
// their CNI plugins package). It returns the criclient binary and a CNI
// bin dir holding loopback and weft-cni.
func critools(t *testing.T) (criclient, binDir string) {
	t.Helper()
	dir := t.TempDir()
	criclient, binDir = filepath.Join(dir, "criclient"), filepath.Join(dir, "cni")
	for _, b := range [][]string{
		{"-o", criclient, "."},
		{"-o", filepath.Join(binDir, "loopback"), "github.com/containernetworking/plugins/plugins/main/loopback"},
	} {
		cmd := exec.Command("go", append([]string{"build"}, b...)...)
		cmd.Dir = "testdata/critools"
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", b[len(b)-1], err, out)
		}
	}
	plugin, err := os.ReadFile(filepath.Join(pluginDir, "weft-cni"))
	if err == nil {
		err = os.WriteFile(filepath.Join(binDir, "weft-cni"), plugin, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	return criclient, binDir
}

// TestCtrRunCNI: `ctr run --cni` runs weft-cni itself (go-cni in the ctr
// process) for a busybox container, which shows its address and pings the
// sim's pods; on exit ctr's DEL detaches it. ctr reads only
// /etc/cni/net.d and /opt/cni/bin, so it runs in a private mount namespace
// where both are overlays whose writes land in the temporary root.
func TestCtrRunCNI(t *testing.T) {
	needContainerd(t)
	c := simCluster(t)
	n1 := c.Nodes[0]
	cl := weftdClient(t, n1.Socket)
	_, binDir := critools(t)
	ctd := startContainerd(t, n1, binDir, shippedConflist(t, n1.Socket, t.TempDir()))
	img := filepath.Join(ctd.root, "busybox.tar")
	busyboxImage(t, img, "docker.io/wcn/busybox:latest", []string{"/bin/sh"})
	ctd.ctr(t, "-n", "wcn", "images", "import", img)

	name := testenv.UniqueName("wcnctr")
	dst1, dst2 := c.Nodes[0].Pods[0].IP().String(), c.Nodes[1].Pods[0].IP().String()
	ovl := filepath.Join(ctd.root, "ovl")
	script := fmt.Sprintf(`set -e
for d in etc opt; do
  mkdir -p %[1]s/$d-up %[1]s/$d-work
  mount -t overlay overlay -o lowerdir=/$d,upperdir=%[1]s/$d-up,workdir=%[1]s/$d-work /$d
done
mkdir -p /etc/cni/net.d /opt/cni/bin
cp %[2]s/10-weft.conflist /etc/cni/net.d/
cp %[3]s/weft-cni %[3]s/loopback /opt/cni/bin/
exec ctr -a %[4]s -n wcn run --rm --cni docker.io/wcn/busybox:latest %[5]s \
  /bin/sh -c 'ip -4 addr show eth0; ip route; for d in %[6]s %[7]s; do ping -c 2 -i 0.2 -W 3 $d; echo "ping $d exit $?"; done'
`, ovl, filepath.Join(ctd.root, "cni-conf"), binDir, ctd.socket, name, dst1, dst2)
	t.Cleanup(func() {
		for _, args := range [][]string{{"tasks", "kill", "-s", "SIGKILL", name}, {"tasks", "delete", "-f", name}, {"containers", "delete", name}} {
			exec.Command("ctr", append([]string{"-a", ctd.socket, "-n", "wcn"}, args...)...).Run()
		}
		killCgroup(t, "wcn", name)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", "--net="+netdev.NetnsPath(n1.Netns), "unshare", "-m", "--propagation", "private", "sh", "-c", script)
	out, err := cmd.CombinedOutput()
	t.Logf("ctr run --cni:\n%s", out)
	if err != nil {
		t.Fatalf("ctr run --cni: %v", err)
	}
	for _, want := range []string{"inet 10.244.", "default via 10.244."} {
		if !strings.Contains(string(out), want) {
			t.Errorf("container output lacks %q", want)
		}
	}
	// Each ping on its own: its exit status (0 only when an echo reply
	// came back) and its own statistics, so that one destination failing
	// cannot hide behind the other's success.
	for _, dst := range []string{dst1, dst2} {
		if err := pingResult(string(out), dst); err != nil {
			t.Errorf("container ping %s: %v", dst, err)
		}
	}
	ports, err := cl.Ports(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ports {
		if strings.Contains(p.PodID, name) {
			t.Errorf("weftd still has %s after ctr's DEL", p.PodID)
		}
	}
}

// pingResult finds, in the output of the container's shell, the result of
// `ping -c 2 DST` followed by `echo "ping DST exit $?"`: both echoes must
// have been answered and ping must have exited 0.
func pingResult(out, dst string) error {
	stats := "--- " + dst + " ping statistics ---\n"
	i := strings.Index(out, stats)
	if i < 0 {
		return fmt.Errorf("no ping statistics for %s", dst)
	}
	summary, _, _ := strings.Cut(out[i+len(stats):], "\n")
	if !strings.HasPrefix(summary, "2 packets transmitted, 2 packets received") {
		return fmt.Errorf("%q, want 2 of 2 received", summary)
	}
	if !strings.Contains(out, "ping "+dst+" exit 0\n") {
		return fmt.Errorf("ping did not exit 0")
	}
	return nil
}

func TestPingResult(t *testing.T) {
	const ok = "--- 10.244.1.3 ping statistics ---\n2 packets transmitted, 2 packets received, 0% packet loss\nround-trip min/avg/max = 0.1/0.2/0.3 ms\nping 10.244.1.3 exit 0\n"
	tests := []struct {
		name, out string
		ok        bool
	}{
		{"answered", ok, true},
		{"other destination only", strings.ReplaceAll(ok, "10.244.1.3", "10.244.2.3"), false},
		{"one lost", strings.Replace(strings.Replace(ok, "2 packets received", "1 packets received", 1), "exit 0", "exit 1", 1), false},
		{"exit status", strings.Replace(ok, "exit 0", "exit 1", 1), false},
		{"no exit line", strings.Replace(ok, "ping 10.244.1.3 exit 0\n", "", 1), false},
	}
	for _, tc := range tests {
		if err := pingResult(tc.out, "10.244.1.3"); (err == nil) != tc.ok {
			t.Errorf("%s: pingResult = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}
