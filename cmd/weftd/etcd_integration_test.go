package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/internal/childproc"
	"github.com/weftnet/weft/registry/etcd/etcdtest"
	"github.com/weftnet/weft/sim"
)

// TestEtcdOutage runs a cluster on the etcd registry (the sim's own etcd,
// inside the underlay namespace), kills etcd under the running weftds for
// longer than a lease lasts, and starts it again. While it is down every
// node reports the registry degraded and keeps forwarding with the peers
// it knew: pods keep reaching each other, and a TCP connection lives on.
// Once etcd is back the nodes report ok with their subnets unchanged, and
// a node added afterwards is reachable.
func TestEtcdOutage(t *testing.T) {
	etcdtest.Require(t)
	var restarted *exec.Cmd // our etcd, if the test started one; stopped after Down
	t.Cleanup(func() {
		if restarted != nil && pidRunning(restarted.Process.Pid) {
			restarted.Process.Kill()
		}
	})
	c := upCluster(t, sim.Options{Registry: "etcd", LeaseTTL: testLeaseTTL}, 2, 1)
	if c.Etcd == nil || c.Etcd.PID == 0 {
		t.Fatalf("sim with registry etcd and no endpoints runs no etcd of its own (Etcd %+v)", c.Etcd)
	}
	underlayNS := c.Name + "-u"
	n1, n2 := c.Nodes[0], c.Nodes[1]
	p11, p21 := n1.Pods[0], n2.Pods[0]
	cls := []*api.Client{nodeClient(t, n1), nodeClient(t, n2)}
	var before []api.Status
	for _, cl := range cls {
		st := status(t, cl)
		if st.Registry.Backend != "etcd" || st.Registry.State != api.RegistryOK {
			t.Fatalf("%s registry %+v, want etcd ok", st.Node, st.Registry)
		}
		before = append(before, st)
	}
	registryState := func(want string) func() (bool, string) {
		return func() (bool, string) {
			var got []string
			ok := true
			for _, cl := range cls {
				r := status(t, cl).Registry
				got = append(got, r.State+" "+r.LastError)
				ok = ok && r.State == want
			}
			return ok, fmt.Sprint(got)
		}
	}
	pingAll(t, p11.Netns, p21.IP())
	conn := connectTCP(t, p11.Netns, p21.Netns, p21.IP())
	if err := conn.roundTrip("before", 5*time.Second); err != nil {
		t.Fatal(err)
	}

	// The exact command line the sim started etcd with (nsenter exec'd
	// it), to start it again the same way on the same data.
	argv, err := procCmdline(c.Etcd.PID)
	if err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	if err := syscall.Kill(c.Etcd.PID, syscall.SIGKILL); err != nil {
		t.Fatalf("kill etcd %d: %v", c.Etcd.PID, err)
	}
	waitFor(t, 5*time.Second, "etcd exits", func() (bool, string) { return !pidRunning(c.Etcd.PID), "still running" })

	waitFor(t, 15*time.Second, "nodes report the registry degraded", registryState(api.RegistryDegraded))
	// Past the lease TTL: the leases would have lapsed, yet nobody can see
	// that, and forwarding must go on with the last known peers.
	time.Sleep(time.Until(killed.Add(testLeaseTTL + time.Second)))
	for i, cl := range cls {
		if rs := routes(t, cl); !hasPeerRoute(rs, before[1-i].Subnet) {
			t.Errorf("%s lost its route to %s while etcd is down: %v", before[i].Node, before[1-i].Subnet, rs)
		}
	}
	pingAll(t, p11.Netns, p21.IP())
	pingAll(t, p21.Netns, p11.IP())
	if err := conn.roundTrip("etcd down", 5*time.Second); err != nil {
		t.Errorf("TCP while etcd is down: %v", err)
	}
	t.Logf("etcd down for %s; forwarding went on", time.Since(killed).Round(100*time.Millisecond))

	logf, err := os.OpenFile(c.Etcd.Log, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	restarted = sim.Command(context.Background(), underlayNS, argv...)
	restarted.Stdout, restarted.Stderr = logf, logf
	restarted.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p, err := childproc.Start(restarted) // dies with the test binary
	if err != nil {
		t.Fatalf("restart etcd: %v", err)
	}
	c.Etcd.PID = p.Pid() // so that Down stops this one
	waitFor(t, 30*time.Second, "nodes report the registry ok again", registryState(api.RegistryOK))
	for i, cl := range cls {
		st := status(t, cl)
		if st.Subnet != before[i].Subnet {
			t.Errorf("%s has subnet %s after the outage, before %s", st.Node, st.Subnet, before[i].Subnet)
		}
	}
	waitFor(t, 10*time.Second, "routes after the outage", func() (bool, string) {
		r1, r2 := routes(t, cls[0]), routes(t, cls[1])
		return hasPeerRoute(r1, before[1].Subnet) && hasPeerRoute(r2, before[0].Subnet), fmt.Sprintf("n1 %v; n2 %v", r1, r2)
	})

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n3, err := c.AddNode(ctx)
	if err != nil {
		t.Fatalf("add a node after the outage: %v", err)
	}
	p31, err := c.AddPod(ctx, n3)
	if err != nil {
		t.Fatal(err)
	}
	st3 := status(t, nodeClient(t, n3))
	waitFor(t, 10*time.Second, "old nodes learn the new one", func() (bool, string) {
		r1, r2 := routes(t, cls[0]), routes(t, cls[1])
		return hasPeerRoute(r1, st3.Subnet) && hasPeerRoute(r2, st3.Subnet), fmt.Sprintf("n1 %v; n2 %v", r1, r2)
	})
	pingAll(t, p11.Netns, p31.IP())
	pingAll(t, p31.Netns, p21.IP())
	if err := conn.roundTrip("after", 5*time.Second); err != nil {
		t.Errorf("TCP after the outage: %v", err)
	}
}

func procCmdline(pid int) ([]string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return nil, fmt.Errorf("command line of pid %d: %w", pid, err)
	}
	var argv []string
	for _, a := range bytes.Split(bytes.TrimRight(b, "\x00"), []byte{0}) {
		argv = append(argv, string(a))
	}
	if len(argv) == 0 {
		return nil, fmt.Errorf("pid %d has an empty command line", pid)
	}
	return argv, nil
}

// pidRunning reports whether pid exists and is not a zombie.
func pidRunning(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) {
		return b[i+2] != 'Z'
	}
	return true
}
