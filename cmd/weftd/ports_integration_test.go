package main

import (
	"context"
	"errors"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/internal/testenv"
	"github.com/weftnet/weft/netdev"
	"github.com/weftnet/weft/sim"
	"golang.org/x/sys/unix"
)

// podNetns creates a namespace for a hand-attached pod, deleted when the
// test ends.
func podNetns(t *testing.T) (name, path string) {
	t.Helper()
	name = testenv.UniqueName("r1p")
	path, err := netdev.NewNetns(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := netdev.DeleteNetns(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	return name, path
}

func attach(t *testing.T, cl *api.Client, req api.AttachRequest) api.AttachResponse {
	t.Helper()
	ctx, cancel := apiCtx()
	defer cancel()
	resp, err := cl.Attach(ctx, req)
	if err != nil {
		t.Fatalf("attach %q/%q in %s: %v", req.PodID, req.IfName, req.Netns, err)
	}
	return resp
}

// noDuplicateIPs fails t if two attached ports of the node share an address.
func noDuplicateIPs(t *testing.T, ps []api.Port, more ...api.AttachResponse) {
	t.Helper()
	seen := map[netip.Addr]string{}
	add := func(ip netip.Addr, who string) {
		if prev, ok := seen[ip]; ok {
			t.Errorf("two pods have %s: %s and %s", ip, prev, who)
		}
		seen[ip] = who
	}
	for _, p := range ps {
		add(p.IP, strconv.Quote(p.PodID)+"/"+p.IfName)
	}
	for _, r := range more {
		if _, listed := seen[r.IP]; listed {
			found := false
			for _, p := range ps {
				found = found || (p.PodID == r.PodID && p.IfName == r.IfName)
			}
			if found {
				continue
			}
		}
		add(r.IP, strconv.Quote(r.PodID)+"/"+r.IfName)
	}
}

// TestPortRecordNamesCollide is issue 12 item 1 in real namespaces: pod
// "a@x" on eth0 and pod "a" on interface "x@eth0" once shared a record
// file; after a weftd restart one had no record, IPAM GC freed its address
// while its TAP still held it, and the next attach got it: two namespaces
// with one IP.
func TestPortRecordNamesCollide(t *testing.T) {
	c := upCluster(t, sim.Options{Name: testenv.UniqueName("r1")}, 1, 0)
	n := c.Nodes[0]
	cl := nodeClient(t, n)
	_, ns1 := podNetns(t)
	_, ns2 := podNetns(t)
	_, ns3 := podNetns(t)
	a := attach(t, cl, api.AttachRequest{PodID: "a@x", IfName: "eth0", Netns: ns1})
	b := attach(t, cl, api.AttachRequest{PodID: "a", IfName: "x@eth0", Netns: ns2})
	if a.IP == b.IP {
		t.Fatalf("both pods got %s", a.IP)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Restart(ctx, n); err != nil {
		t.Fatal(err)
	}
	ps := ports(t, cl)
	if len(ps) != 2 {
		t.Errorf("after the restart %d ports are attached, want both: %+v", len(ps), ps)
	}
	third := attach(t, cl, api.AttachRequest{PodID: "third", Netns: ns3})
	noDuplicateIPs(t, ps, a, b, third)
	if third.IP == a.IP || third.IP == b.IP {
		t.Errorf("the next pod got %s, an address a live pod holds (a@x/eth0 %s, a/x@eth0 %s)", third.IP, a.IP, b.IP)
	}
}

// TestAttachRefusesOddInput is issue 12 item 2's input half: a relative or
// unclean namespace path, a path outside the namespace directories, and
// pod IDs that cannot be stored (a newline, 250 bytes) are 400s naming the
// field, before anything is allocated.
func TestAttachRefusesOddInput(t *testing.T) {
	c := upCluster(t, sim.Options{Name: testenv.UniqueName("r1")}, 1, 0)
	cl := nodeClient(t, c.Nodes[0])
	name, path := podNetns(t)
	sleeper := sleepIn(t, path)
	pid := strconv.Itoa(sleeper.Process.Pid)
	for _, tc := range []struct {
		name  string
		req   api.AttachRequest
		field string
	}{
		{"relative proc path", api.AttachRequest{PodID: "r1", Netns: "../../proc/" + pid + "/ns/net"}, "netns"},
		{"unclean path", api.AttachRequest{PodID: "r1", Netns: "/run/netns/../netns/" + name}, "netns"},
		{"outside the namespace directories", api.AttachRequest{PodID: "r1", Netns: "/proc/self/ns/net"}, "netns"},
		{"newline in pod ID", api.AttachRequest{PodID: "r1\nx", Netns: path}, "pod_id"},
		{"250-byte pod ID", api.AttachRequest{PodID: strings.Repeat("p", 250), Netns: path}, "pod_id"},
	} {
		ctx, cancel := apiCtx()
		_, err := cl.Attach(ctx, tc.req)
		cancel()
		var re *api.RemoteError
		if !errors.As(err, &re) || re.Status != 400 || re.Field != tc.field {
			t.Errorf("%s: err %v (%+v), want a 400 naming %s", tc.name, err, re, tc.field)
		}
	}
	if ipam := ipamHeld(t, cl); ipam != 0 {
		t.Errorf("refused attaches left %d addresses allocated", ipam)
	}
	// The absolute forms work.
	attach(t, cl, api.AttachRequest{PodID: "r1-proc", Netns: "/proc/" + pid + "/ns/net"})
	attach(t, cl, api.AttachRequest{PodID: "r1-bind", Netns: path, IfName: "net1"})
}

// sleepIn starts a process inside the namespace at path and returns once
// /proc/PID/ns/net is that namespace: until nsenter has switched, the
// path names the test's own (the root) namespace, where nothing may be
// attached. It is killed when the test ends.
func sleepIn(t *testing.T, path string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("nsenter", "--net="+path, "sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var want, got unix.Stat_t
	if err := unix.Stat(path, &want); err != nil {
		t.Fatal(err)
	}
	proc := "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/net"
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if unix.Stat(proc, &got) == nil && got.Ino == want.Ino {
			return cmd
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not enter %s within 5 s", proc, path)
		}
	}
}

func ipamHeld(t *testing.T, cl *api.Client) int {
	t.Helper()
	ctx, cancel := apiCtx()
	defer cancel()
	st, err := cl.IPAM(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return len(st.Allocations)
}

// TestRestartKeepsAddressOfUnreachablePod is issue 12 item 2's release
// half: a pod attached by /proc/PID/ns/net whose process exits while its
// namespace lives on (a bind mount holds it) cannot be re-opened by a
// restarted weftd, but its TAP still holds its address. weftd once logged
// "pod port gone; releasing it" and gave the address to the next pod.
// Now the address stays held until the pod is detached.
func TestRestartKeepsAddressOfUnreachablePod(t *testing.T) {
	c := upCluster(t, sim.Options{Name: testenv.UniqueName("r1")}, 1, 0)
	n := c.Nodes[0]
	cl := nodeClient(t, n)
	_, path := podNetns(t)
	_, other := podNetns(t)
	sleeper := sleepIn(t, path)
	procPath := "/proc/" + strconv.Itoa(sleeper.Process.Pid) + "/ns/net"
	gone := attach(t, cl, api.AttachRequest{PodID: "r1-proc", Netns: procPath})

	if err := c.Stop(n); err != nil {
		t.Fatal(err)
	}
	sleeper.Process.Signal(syscall.SIGKILL)
	sleeper.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.StartNode(ctx, n); err != nil {
		t.Fatal(err)
	}
	// The TAP is still there, configured, in the namespace.
	out, err := exec.Command("ip", "-n", pathName(path), "-br", "addr", "show", "dev", "eth0").CombinedOutput()
	if err != nil || !strings.Contains(string(out), gone.IP.String()) {
		t.Fatalf("the pod's TAP with %s should still be in its namespace: %s %v", gone.IP, out, err)
	}
	// IPAM frees addresses round-robin, so the next pod would not show the
	// duplicate at once: check that the address is still allocated.
	if !ipamHolds(t, cl, gone.IP) {
		t.Fatalf("after the restart %s is free in IPAM while the pod's TAP still holds it", gone.IP)
	}
	next := attach(t, cl, api.AttachRequest{PodID: "r1-next", Netns: other})
	if next.IP == gone.IP {
		t.Fatalf("the next pod got %s, the address the unreachable pod's TAP still holds", next.IP)
	}
	// Detaching the unreachable pod frees its address.
	ctx2, cancel2 := apiCtx()
	defer cancel2()
	if err := cl.Detach(ctx2, api.DetachRequest{PodID: "r1-proc"}); err != nil {
		t.Fatalf("detach the unreachable pod: %v", err)
	}
	if held := ipamHeld(t, cl); held != 1 {
		t.Errorf("after detaching it %d addresses are held, want 1", held)
	}
}

func ipamHolds(t *testing.T, cl *api.Client, ip netip.Addr) bool {
	t.Helper()
	ctx, cancel := apiCtx()
	defer cancel()
	st, err := cl.IPAM(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range st.Allocations {
		if a.IP == ip {
			return true
		}
	}
	return false
}

func pathName(p string) string { return p[strings.LastIndexByte(p, '/')+1:] }
