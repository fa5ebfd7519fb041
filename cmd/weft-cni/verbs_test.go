package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/netdev"
)

// The tests in this file run the verbs in-process against a real weftd in
// a sim node namespace. The plugin code runs in the test's namespace and
// reaches weftd by its socket and the pod namespace by netlink; every
// device and address is in namespaces the test made.

// TestVerbsVersions: ADD, a repeated ADD, CHECK, DEL and a second DEL, with
// a config of each spec version, and a pod that can reach the sim's pods.
func TestVerbsVersions(t *testing.T) {
	n1 := node1(t)
	c := simCluster(t)
	cl := weftdClient(t, n1.Socket)
	for _, v := range supportedVersions {
		t.Run(v, func(t *testing.T) {
			nsName, nsPath := newPodNetns(t)
			id := newContainerID(t, n1.Socket)
			conf := netConf(t, v, map[string]any{"socket": n1.Socket, "pendingDir": t.TempDir()})
			a := cmdArgs(id, nsPath, conf)

			r, raw := mustAdd(t, a)
			if raw.Version() != v {
				t.Errorf("result version %s, want %s", raw.Version(), v)
			}
			p, ok := findPort(t, cl, id)
			if !ok {
				t.Fatalf("weftd has no port for %s after ADD", id)
			}
			if p.PodNamespace != "wcn-ns" || p.PodName != "wcn-pod" {
				t.Errorf("weftd shows pod %s/%s, want wcn-ns/wcn-pod from CNI_ARGS", p.PodNamespace, p.PodName)
			}
			checkAgainstPort(t, r, p, nsPath, v)
			checkLink(t, nsPath, r)

			r2, _ := mustAdd(t, a)
			var b1, b2 bytes.Buffer
			r.PrintTo(&b1)
			r2.PrintTo(&b2)
			if b1.String() != b2.String() {
				t.Errorf("repeated ADD gave another result:\n%s\nthen\n%s", b1.String(), b2.String())
			}

			if err := doCheck(cmdArgs(id, nsPath, withPrevResult(t, conf, raw))); err != nil {
				t.Errorf("CHECK after ADD: %v", err)
			}
			ping(t, nsName, c.Nodes[0].Pods[0].IP().String())
			ping(t, nsName, c.Nodes[1].Pods[0].IP().String())

			delArgs := cmdArgs(id, nsPath, withPrevResult(t, conf, raw))
			for i := range 2 {
				if err := doDel(delArgs); err != nil {
					t.Fatalf("DEL #%d: %v", i+1, err)
				}
			}
			if _, ok := findPort(t, cl, id); ok {
				t.Errorf("weftd still has a port for %s after DEL", id)
			}
			if h, err := netdev.OpenHandle(nsPath); err == nil {
				if _, err := h.LinkByName("eth0"); err == nil {
					t.Errorf("eth0 still in the pod namespace after DEL")
				}
				h.Close()
			}
		})
	}
}

// checkAgainstPort checks the printed result against weftd's port.
func checkAgainstPort(t *testing.T, r *current.Result, p api.Port, nsPath, version string) {
	t.Helper()
	if len(r.Interfaces) != 1 || len(r.IPs) != 1 || len(r.Routes) != 1 {
		t.Fatalf("result has %d interfaces, %d IPs, %d routes; want 1 each", len(r.Interfaces), len(r.IPs), len(r.Routes))
	}
	ifc := r.Interfaces[0]
	if ifc.Name != "eth0" || ifc.Mac != p.MAC.String() || ifc.Sandbox != nsPath {
		t.Errorf("interface %+v; weftd: mac %s, netns %s", ifc, p.MAC, nsPath)
	}
	if version != "0.4.0" && ifc.Mtu != p.MTU {
		t.Errorf("interface MTU %d, weftd %d", ifc.Mtu, p.MTU)
	}
	ip := r.IPs[0]
	if ip.Address.String() != p.Address.String() || ip.Gateway.String() != p.Gateway.String() {
		t.Errorf("IP %s gw %s; weftd %s gw %s", ip.Address.String(), ip.Gateway, p.Address, p.Gateway)
	}
	if rt := r.Routes[0]; rt.Dst.String() != "0.0.0.0/0" || rt.GW.String() != p.Gateway.String() {
		t.Errorf("route %v, want default via %s", rt, p.Gateway)
	}
}

func checkLink(t *testing.T, nsPath string, r *current.Result) {
	t.Helper()
	h, err := netdev.OpenHandle(nsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	l, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatalf("eth0 in pod namespace: %v", err)
	}
	if got := l.Attrs().HardwareAddr.String(); got != r.Interfaces[0].Mac {
		t.Errorf("eth0 MAC %s, result %s", got, r.Interfaces[0].Mac)
	}
	addrs, _ := h.AddrList(l, netlink.FAMILY_V4)
	if len(addrs) != 1 || addrs[0].IPNet.String() != r.IPs[0].Address.String() {
		t.Errorf("eth0 addresses %v, result %s", addrs, r.IPs[0].Address.String())
	}
}

// TestDelWithoutNamespace: DEL after the namespace is gone, DEL with an
// empty CNI_NETNS (the runtime's second DEL), and DEL of something never
// added all succeed, and the first releases weftd's port.
func TestDelWithoutNamespace(t *testing.T) {
	n1 := node1(t)
	cl := weftdClient(t, n1.Socket)
	nsName, nsPath := newPodNetns(t)
	id := newContainerID(t, n1.Socket)
	conf := netConf(t, "1.1.0", map[string]any{"socket": n1.Socket, "pendingDir": t.TempDir()})
	mustAdd(t, cmdArgs(id, nsPath, conf))
	if err := netdev.DeleteNetns(nsName); err != nil {
		t.Fatal(err)
	}
	if err := doDel(cmdArgs(id, nsPath, conf)); err != nil {
		t.Errorf("DEL with the namespace gone: %v", err)
	}
	if _, ok := findPort(t, cl, id); ok {
		t.Errorf("weftd still has a port for %s", id)
	}
	if err := doDel(cmdArgs(id, "", conf)); err != nil {
		t.Errorf("DEL with empty CNI_NETNS: %v", err)
	}
	if err := doDel(cmdArgs(newContainerID(t, n1.Socket), "", conf)); err != nil {
		t.Errorf("DEL of a container never added: %v", err)
	}
}

// TestDelWeftdDown: with weftd unreachable DEL succeeds, records the
// release and removes the TAP from the pod; the next DEL that reaches
// weftd applies the record, so weftd frees the port.
func TestDelWeftdDown(t *testing.T) {
	n1 := node1(t)
	cl := weftdClient(t, n1.Socket)
	_, nsPath := newPodNetns(t)
	id := newContainerID(t, n1.Socket)
	pending := filepath.Join(t.TempDir(), "cni-pending")
	up := netConf(t, "1.1.0", map[string]any{"socket": n1.Socket, "pendingDir": pending})
	down := netConf(t, "1.1.0", map[string]any{"socket": filepath.Join(t.TempDir(), "weftd.sock"), "pendingDir": pending})
	mustAdd(t, cmdArgs(id, nsPath, up))

	if _, err := doAdd(t, cmdArgs(newContainerID(t, n1.Socket), nsPath, down)); err == nil {
		t.Fatal("ADD with weftd down succeeded")
	} else {
		cniError(t, err, types.ErrTryAgainLater, "weftd is not running", "systemctl start weftd")
	}

	var warn bytes.Buffer
	stderr = &warn
	t.Cleanup(func() { stderr = os.Stderr })
	if err := doDel(cmdArgs(id, nsPath, down)); err != nil {
		t.Fatalf("DEL with weftd down: %v", err)
	}
	file := filepath.Join(pending, id+"@eth0")
	rels, errs := readPending(pending)
	if len(errs) != 0 || len(rels) != 1 || rels[0].PodID != id || rels[0].IfName != "eth0" || rels[0].Netns != nsPath {
		t.Fatalf("pending releases %+v %v, want one for %s eth0 in %s", rels, errs, id, nsPath)
	}
	if _, err := os.Stat(file); err != nil {
		t.Errorf("pending file: %v", err)
	}
	if !strings.Contains(warn.String(), file) {
		t.Errorf("stderr %q does not name the pending file %s", warn.String(), file)
	}
	h, err := netdev.OpenHandle(nsPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.LinkByName("eth0"); err == nil {
		t.Errorf("eth0 still in the pod after DEL with weftd down")
	}
	h.Close()
	if _, ok := findPort(t, cl, id); !ok {
		t.Fatalf("weftd lost the port before the pending release was applied")
	}

	if err := doDel(cmdArgs(newContainerID(t, n1.Socket), "", up)); err != nil {
		t.Fatalf("DEL with weftd up: %v", err)
	}
	if _, ok := findPort(t, cl, id); ok {
		t.Errorf("pending release not applied: weftd still has %s", id)
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Errorf("pending file still there after it was applied: %v", err)
	}
}

// TestCheckDetectsChanges: CHECK fails, naming the difference, when
// someone changes the pod's interface or weftd drops the port.
func TestCheckDetectsChanges(t *testing.T) {
	n1 := node1(t)
	tests := []struct {
		name   string
		change func(t *testing.T, h *netlink.Handle, l netlink.Link, id string, r *current.Result)
		code   uint
		msg    []string
	}{
		{name: "address deleted", change: func(t *testing.T, h *netlink.Handle, l netlink.Link, _ string, r *current.Result) {
			addr, _ := netlink.ParseAddr(r.IPs[0].Address.String())
			if err := h.AddrDel(l, addr); err != nil {
				t.Fatal(err)
			}
		}, code: types.ErrInternal, msg: []string{"is missing from eth0", "route default via"}},
		{name: "link down", change: func(t *testing.T, h *netlink.Handle, l netlink.Link, _ string, _ *current.Result) {
			if err := h.LinkSetDown(l); err != nil {
				t.Fatal(err)
			}
		}, code: types.ErrInternal, msg: []string{"interface eth0 is down"}},
		{name: "MTU changed", change: func(t *testing.T, h *netlink.Handle, l netlink.Link, _ string, _ *current.Result) {
			if err := h.LinkSetMTU(l, 1280); err != nil {
				t.Fatal(err)
			}
		}, code: types.ErrInternal, msg: []string{"MTU of eth0 is 1280"}},
		{name: "default route deleted", change: func(t *testing.T, h *netlink.Handle, l netlink.Link, _ string, r *current.Result) {
			rt := &netlink.Route{LinkIndex: l.Attrs().Index, Gw: r.Routes[0].GW}
			if err := h.RouteDel(rt); err != nil {
				t.Fatal(err)
			}
		}, code: types.ErrInternal, msg: []string{"route default via " + "10."}},
		{name: "weftd dropped the port", change: func(t *testing.T, _ *netlink.Handle, _ netlink.Link, id string, _ *current.Result) {
			if err := doDel(cmdArgs(id, "", netConf(t, "1.1.0", map[string]any{"socket": n1.Socket, "pendingDir": t.TempDir()}))); err != nil {
				t.Fatal(err)
			}
		}, code: types.ErrUnknownContainer, msg: []string{"weftd has no port", "interface eth0 is missing"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, nsPath := newPodNetns(t)
			id := newContainerID(t, n1.Socket)
			conf := netConf(t, "1.1.0", map[string]any{"socket": n1.Socket, "pendingDir": t.TempDir()})
			r, raw := mustAdd(t, cmdArgs(id, nsPath, conf))
			check := cmdArgs(id, nsPath, withPrevResult(t, conf, raw))
			if err := doCheck(check); err != nil {
				t.Fatalf("CHECK before the change: %v", err)
			}
			h, err := netdev.OpenHandle(nsPath)
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			l, err := h.LinkByName("eth0")
			if err != nil {
				t.Fatal(err)
			}
			tt.change(t, h, l, id, r)
			cniError(t, doCheck(check), tt.code, tt.msg...)
		})
	}
}

// TestGC: GC detaches what the runtime no longer lists and keeps the rest,
// the sim's own pods included.
func TestGC(t *testing.T) {
	n1 := node1(t)
	cl := weftdClient(t, n1.Socket)
	conf := map[string]any{"socket": n1.Socket, "pendingDir": t.TempDir()}
	var valid []map[string]string
	for _, p := range n1.Pods {
		valid = append(valid, map[string]string{"containerID": p.ID, "ifname": "eth0"})
	}
	keep, drop := newContainerID(t, n1.Socket), newContainerID(t, n1.Socket)
	for _, id := range []string{keep, drop} {
		_, nsPath := newPodNetns(t)
		mustAdd(t, cmdArgs(id, nsPath, netConf(t, "1.1.0", conf)))
	}
	conf["cni.dev/valid-attachments"] = append(valid, map[string]string{"containerID": keep, "ifname": "eth0"})
	if err := cmdGC(&skel.CmdArgs{StdinData: netConf(t, "1.1.0", conf)}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if _, ok := findPort(t, cl, drop); ok {
		t.Errorf("GC kept %s, which the runtime did not list", drop)
	}
	for _, id := range []string{keep, n1.Pods[0].ID} {
		if _, ok := findPort(t, cl, id); !ok {
			t.Errorf("GC detached %s, which the runtime listed", id)
		}
	}
}

// TestStatusRealWeftd: a running sim node is ready; a socket nobody serves
// is not.
func TestStatusRealWeftd(t *testing.T) {
	n1 := node1(t)
	if err := doStatus(&skel.CmdArgs{StdinData: netConf(t, "1.1.0", map[string]any{"socket": n1.Socket})}); err != nil {
		t.Errorf("STATUS of a running weftd: %v", err)
	}
	err := doStatus(&skel.CmdArgs{StdinData: netConf(t, "1.1.0", map[string]any{"socket": filepath.Join(t.TempDir(), "x.sock")})})
	cniError(t, err, types.ErrLimitedConnectivity, "weftd is not running")
}

// TestPendingAppliedByWeftd: the pending-release file is the contract with
// weftd, which applies it when it starts. A DEL without a namespace (the
// CRI's second DEL) while weftd is down leaves the TAP in place, so only
// the record can free the port; after a restart weftd must have applied
// it, and kept the sim's own pods.
func TestPendingAppliedByWeftd(t *testing.T) {
	c := simCluster(t)
	n1 := c.Nodes[0]
	cl := weftdClient(t, n1.Socket)
	_, nsPath := newPodNetns(t)
	id := newContainerID(t, n1.Socket)
	pending := filepath.Join(n1.StateDir, "cni-pending") // weftd's default: <state_dir>/cni-pending
	mustAdd(t, cmdArgs(id, nsPath, netConf(t, "1.1.0", map[string]any{"socket": n1.Socket, "pendingDir": pending})))
	down := netConf(t, "1.1.0", map[string]any{"socket": filepath.Join(t.TempDir(), "weftd.sock"), "pendingDir": pending})
	if err := doDel(cmdArgs(id, "", down)); err != nil {
		t.Fatalf("DEL with weftd down: %v", err)
	}
	file := pendingFile(pending, id, "eth0")
	if _, err := os.Stat(file); err != nil {
		t.Fatalf("no pending release: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	if err := c.Restart(ctx, n1); err != nil {
		t.Fatalf("restart weftd: %v", err)
	}
	if _, ok := findPort(t, cl, id); ok {
		t.Errorf("weftd restored %s instead of applying its pending release", id)
	}
	if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pending file left after weftd started: %v", err)
	}
	if _, ok := findPort(t, cl, n1.Pods[0].ID); !ok {
		t.Errorf("weftd lost the sim pod %s over the restart", n1.Pods[0].ID)
	}
}
