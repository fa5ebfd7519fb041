package main

import (
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/packet"
)

// fakeWeftd serves weftd's API on a unix socket with canned answers, for
// the error paths a real weftd gives only with effort (not ready, subnet
// full, slow) and for tests that need no root.
type fakeWeftd struct {
	socket string
	// Each handler answers one endpoint; nil ones answer 501.
	status func() (int, any)
	attach func(api.AttachRequest) (int, any)
	ports  func() (int, any)
	detach func(podID, ifname string) (int, any)
	delay  time.Duration

	mu       sync.Mutex
	detached []string // "podID ifname" of every DELETE, in order
}

func newFakeWeftd(t *testing.T, f *fakeWeftd) *fakeWeftd {
	t.Helper()
	dir, err := os.MkdirTemp("", "wcn-fake-")
	if err != nil {
		t.Fatal(err)
	}
	f.socket = filepath.Join(dir, "weftd.sock")
	l, err := net.Listen("unix", f.socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: f}
	go srv.Serve(l)
	t.Cleanup(func() {
		srv.Close()
		os.RemoveAll(dir)
	})
	return f
}

func (f *fakeWeftd) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if f.delay > 0 {
		select {
		case <-time.After(f.delay):
		case <-r.Context().Done():
			return
		}
	}
	var status int
	var body any
	notImpl := func() (int, any) {
		return http.StatusNotImplemented, api.Error{Error: "not in this fake", Code: api.CodeNotImplemented}
	}
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/v1/status":
		status, body = call0(f.status, notImpl)
	case r.Method == http.MethodGet && r.URL.Path == "/v1/ports":
		status, body = call0(f.ports, notImpl)
	case r.Method == http.MethodPost && r.URL.Path == "/v1/ports":
		var req api.AttachRequest
		json.NewDecoder(r.Body).Decode(&req)
		if f.attach == nil {
			status, body = notImpl()
		} else {
			status, body = f.attach(req)
		}
	case r.Method == http.MethodDelete && strings.HasPrefix(r.URL.Path, "/v1/ports/"):
		id, ifname := strings.TrimPrefix(r.URL.Path, "/v1/ports/"), r.URL.Query().Get("ifname")
		f.mu.Lock()
		f.detached = append(f.detached, id+" "+ifname)
		f.mu.Unlock()
		if f.detach == nil {
			status, body = http.StatusNoContent, nil
		} else {
			status, body = f.detach(id, ifname)
		}
	default:
		status, body = notImpl()
	}
	if body == nil {
		w.WriteHeader(status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(body)
}

func call0(f, dflt func() (int, any)) (int, any) {
	if f == nil {
		return dflt()
	}
	return f()
}

func (f *fakeWeftd) detachCalls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.detached...)
}

func apiErr(status int, code, field, msg string) func() (int, any) {
	return func() (int, any) { return status, api.Error{Error: msg, Code: code, Field: field} }
}

var fakeAttach = api.AttachResponse{
	PodID: "c1", IfName: "eth0", Netns: "/var/run/netns/p", TapName: "eth0",
	IP: netip.MustParseAddr("10.244.7.9"), Address: netip.MustParsePrefix("10.244.7.9/24"),
	MAC: packet.MAC{0x02, 0, 0x0a, 0xf4, 7, 9}, Gateway: netip.MustParseAddr("10.244.7.1"), MTU: 1450,
}

func okStatus() (int, any) {
	return http.StatusOK, api.Status{Node: "n1", Subnet: netip.MustParsePrefix("10.244.7.0/24"),
		Registry: api.RegistryStatus{Backend: "file", State: api.RegistryOK}}
}

// TestAddResult checks the result ADD prints, in every spec version, from
// a canned weftd answer, and that the CNI_ARGS pod name and UID reach weftd.
func TestAddResult(t *testing.T) {
	var got api.AttachRequest
	f := newFakeWeftd(t, &fakeWeftd{attach: func(r api.AttachRequest) (int, any) {
		got = r
		return http.StatusOK, fakeAttach
	}})
	for _, v := range supportedVersions {
		t.Run(v, func(t *testing.T) {
			a := cmdArgs("c1", "/var/run/netns/p", netConf(t, v, map[string]any{"socket": f.socket}))
			raw, err := doAdd(t, a)
			if err != nil {
				t.Fatal(err)
			}
			if raw.Version() != v {
				t.Errorf("result version %s, want %s (the config's)", raw.Version(), v)
			}
			r, err := current.NewResultFromResult(raw)
			if err != nil {
				t.Fatal(err)
			}
			checkResult(t, r, 0, "/var/run/netns/p", v)
			if got.PodID != "c1" || got.IfName != "eth0" || got.Netns != "/var/run/netns/p" ||
				got.PodNamespace != "wcn-ns" || got.PodName != "wcn-pod" || got.PodUID != "x" {
				t.Errorf("weftd got %+v", got)
			}
		})
	}
	t.Run("chained after another plugin", func(t *testing.T) {
		prev := &current.Result{CNIVersion: "1.1.0", Interfaces: []*current.Interface{{Name: "lo0", Sandbox: "/var/run/netns/p"}}}
		conf := withPrevResult(t, netConf(t, "1.1.0", map[string]any{"socket": f.socket}), prev)
		raw, err := doAdd(t, cmdArgs("c1", "/var/run/netns/p", conf))
		if err != nil {
			t.Fatal(err)
		}
		r, _ := current.NewResultFromResult(raw)
		if len(r.Interfaces) != 2 || r.Interfaces[0].Name != "lo0" {
			t.Fatalf("prevResult's interface not kept: %+v", r.Interfaces)
		}
		checkResult(t, r, 1, "/var/run/netns/p", "1.1.0")
	})
}

// checkResult checks the interface at idx and the address and default
// route weft-cni adds for it against fakeAttach.
func checkResult(t *testing.T, r *current.Result, idx int, sandbox, version string) {
	t.Helper()
	ifc := r.Interfaces[idx]
	if ifc.Name != "eth0" || ifc.Mac != fakeAttach.MAC.String() || ifc.Sandbox != sandbox {
		t.Errorf("interface %+v", ifc)
	}
	if version != "0.4.0" && ifc.Mtu != fakeAttach.MTU {
		t.Errorf("interface MTU %d, want %d", ifc.Mtu, fakeAttach.MTU)
	}
	if len(r.IPs) != 1 || r.IPs[0].Interface == nil || *r.IPs[0].Interface != idx ||
		r.IPs[0].Address.String() != "10.244.7.9/24" || r.IPs[0].Gateway.String() != "10.244.7.1" {
		t.Errorf("IPs %v", r.IPs)
	}
	if len(r.Routes) != 1 || r.Routes[0].Dst.String() != "0.0.0.0/0" || r.Routes[0].GW.String() != "10.244.7.1" {
		t.Errorf("routes %v", r.Routes)
	}
}

// TestWeftdErrors: each failure of weftd becomes the CNI code a runtime
// acts on, with a message naming what to do.
func TestWeftdErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none.sock")
	stale := staleSocket(t)
	tests := []struct {
		name    string
		fake    *fakeWeftd // nil: socket below
		socket  string
		timeout string
		code    uint
		msg     []string
	}{
		{name: "not running", socket: missing, code: types.ErrTryAgainLater,
			msg: []string{"weftd is not running on " + missing, "start it with `weftd` or `systemctl start weftd`"}},
		{name: "stale socket", socket: stale, code: types.ErrTryAgainLater,
			msg: []string{"weftd is not running on " + stale, "nothing answers"}},
		{name: "not ready", fake: &fakeWeftd{attach: func(api.AttachRequest) (int, any) {
			return apiErr(http.StatusServiceUnavailable, api.CodeNotReady, "", "node has no lease yet")()
		}}, code: types.ErrTryAgainLater, msg: []string{"not ready", "node has no lease yet"}},
		{name: "bad netns", fake: &fakeWeftd{attach: func(api.AttachRequest) (int, any) {
			return apiErr(http.StatusBadRequest, api.CodeBadRequest, "netns", "netns: /x: no such file or directory")()
		}}, code: types.ErrInvalidNetNS, msg: []string{"CNI_NETNS", "no such file"}},
		{name: "conflict", fake: &fakeWeftd{attach: func(api.AttachRequest) (int, any) {
			return apiErr(http.StatusConflict, api.CodeConflict, "", "pod c1 eth0 is attached in netns /a, not /b")()
		}}, code: types.ErrInternal, msg: []string{"attach c1 eth0", "attached in netns /a"}},
		{name: "subnet full", fake: &fakeWeftd{attach: func(api.AttachRequest) (int, any) {
			return apiErr(http.StatusConflict, api.CodeExhausted, "", "10.244.7.0/24 exhausted")()
		}}, code: types.ErrInternal, msg: []string{"subnet is full"}},
		{name: "internal", fake: &fakeWeftd{attach: func(api.AttachRequest) (int, any) {
			return apiErr(http.StatusInternalServerError, api.CodeInternal, "", "create tap: boom")()
		}}, code: types.ErrInternal, msg: []string{"create tap: boom"}},
		{name: "slow", fake: &fakeWeftd{delay: 5 * time.Second}, timeout: "200ms",
			code: types.ErrTryAgainLater, msg: []string{"did not answer within 200ms"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			socket := tt.socket
			if tt.fake != nil {
				socket = newFakeWeftd(t, tt.fake).socket
			}
			extra := map[string]any{"socket": socket}
			if tt.timeout != "" {
				extra["timeout"] = tt.timeout
			}
			_, err := doAdd(t, cmdArgs("c1", "/var/run/netns/p", netConf(t, "1.1.0", extra)))
			cniError(t, err, tt.code, tt.msg...)
		})
	}
}

// staleSocket is a socket file nobody listens on, as a crashed weftd
// leaves behind.
func staleSocket(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "stale.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	return path
}

func TestStatusStates(t *testing.T) {
	tests := []struct {
		name string
		fake *fakeWeftd // nil: nothing serves the socket
		code uint       // 0: ready
		msg  []string
	}{
		{name: "ready", fake: &fakeWeftd{status: okStatus}},
		{name: "registry degraded", fake: &fakeWeftd{status: func() (int, any) {
			_, st := okStatus()
			s := st.(api.Status)
			s.Registry.State, s.Registry.LastError = api.RegistryDegraded, "etcd: context deadline exceeded"
			return http.StatusOK, s
		}}, code: types.ErrPluginNotAvailable, msg: []string{"does not hold its node lease", "etcd: context deadline exceeded"}},
		{name: "no subnet", fake: &fakeWeftd{status: func() (int, any) {
			_, st := okStatus()
			s := st.(api.Status)
			s.Subnet = netip.Prefix{}
			return http.StatusOK, s
		}}, code: types.ErrPluginNotAvailable, msg: []string{"no pod subnet"}},
		{name: "not ready", fake: &fakeWeftd{status: apiErr(http.StatusServiceUnavailable, api.CodeNotReady, "", "starting")},
			code: types.ErrPluginNotAvailable, msg: []string{"not ready"}},
		{name: "not running", code: types.ErrLimitedConnectivity, msg: []string{"weftd is not running", "no network until it is back"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			socket := filepath.Join(t.TempDir(), "none.sock")
			if tt.fake != nil {
				socket = newFakeWeftd(t, tt.fake).socket
			}
			err := doStatus(&skel.CmdArgs{StdinData: netConf(t, "1.1.0", map[string]any{"socket": socket})})
			if tt.code == 0 {
				if err != nil {
					t.Fatalf("STATUS: %v", err)
				}
				return
			}
			cniError(t, err, tt.code, tt.msg...)
		})
	}
}

// TestDelFake covers DEL's answers to weftd's: gone already is success,
// down is success with a pending release, starting is "try again".
func TestDelFake(t *testing.T) {
	tests := []struct {
		name    string
		fake    *fakeWeftd // nil: weftd down
		netns   string
		code    uint // 0: success
		pending bool // a pending release is left
	}{
		{name: "detached", fake: &fakeWeftd{}, netns: "/var/run/netns/p"},
		{name: "nothing to detach", fake: &fakeWeftd{detach: func(string, string) (int, any) {
			return apiErr(http.StatusNotFound, api.CodeNotFound, "", "no port for pod c1 interface eth0")()
		}}},
		{name: "weftd down, no netns", pending: true},
		{name: "weftd starting", fake: &fakeWeftd{detach: func(string, string) (int, any) {
			return apiErr(http.StatusServiceUnavailable, api.CodeNotReady, "", "starting")()
		}}, code: types.ErrTryAgainLater},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			socket := filepath.Join(t.TempDir(), "none.sock")
			if tt.fake != nil {
				socket = newFakeWeftd(t, tt.fake).socket
			}
			pending := filepath.Join(t.TempDir(), "pending")
			conf := netConf(t, "1.1.0", map[string]any{"socket": socket, "pendingDir": pending})
			err := doDel(cmdArgs("c1", tt.netns, conf))
			if tt.code != 0 {
				cniError(t, err, tt.code)
			} else if err != nil {
				t.Fatalf("DEL: %v", err)
			}
			rels, _ := readPending(pending)
			if got := len(rels) == 1 && rels[0].PodID == "c1" && rels[0].IfName == "eth0"; got != tt.pending {
				t.Errorf("pending releases %+v, want one for c1 eth0: %v", rels, tt.pending)
			}
			if tt.fake != nil {
				if calls := tt.fake.detachCalls(); len(calls) != 1 || calls[0] != "c1 eth0" {
					t.Errorf("weftd saw detaches %q, want [c1 eth0]", calls)
				}
			}
		})
	}
}

// TestPendingApplied: once weftd answers again, the next DEL applies the
// releases recorded while it was down, and an ADD of the same attachment
// first applies its own.
func TestPendingApplied(t *testing.T) {
	pending := t.TempDir()
	for _, id := range []string{"old1", "old2", "c1"} {
		if err := writePending(pending, PendingRelease{Version: pendingVersion, PodID: id, IfName: "eth0", Reason: "test"}); err != nil {
			t.Fatal(err)
		}
	}
	f := newFakeWeftd(t, &fakeWeftd{attach: func(api.AttachRequest) (int, any) { return http.StatusOK, fakeAttach }})
	conf := netConf(t, "1.1.0", map[string]any{"socket": f.socket, "pendingDir": pending})
	if _, err := doAdd(t, cmdArgs("c1", "/var/run/netns/p", conf)); err != nil {
		t.Fatal(err)
	}
	if calls := f.detachCalls(); len(calls) != 1 || calls[0] != "c1 eth0" {
		t.Errorf("ADD applied %q, want only its own pending release [c1 eth0]", calls)
	}
	if err := doDel(cmdArgs("other", "", conf)); err != nil {
		t.Fatal(err)
	}
	calls := f.detachCalls()
	if len(calls) != 4 || !containsAll(calls[1:], "other eth0", "old1 eth0", "old2 eth0") {
		t.Errorf("detaches %q, want c1, other, then old1 and old2", calls)
	}
	if rels, errs := readPending(pending); len(rels) != 0 || len(errs) != 0 {
		t.Errorf("pending left: %+v %v", rels, errs)
	}
}

func containsAll(have []string, want ...string) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			found = found || h == w
		}
		if !found {
			return false
		}
	}
	return true
}

// TestGCFake: GC detaches the CNI-made ports the runtime does not list,
// leaves ports attached by anyone else alone, goes on past a failure and
// reports it.
func TestGCFake(t *testing.T) {
	port := func(id, ifname string) api.Port {
		return api.Port{PodID: id, IfName: ifname, IP: netip.MustParseAddr("10.244.7.9"), Owner: api.OwnerCNI}
	}
	byHand := api.Port{PodID: "manual", IfName: "eth0", IP: netip.MustParseAddr("10.244.7.8")}
	f := newFakeWeftd(t, &fakeWeftd{
		ports: func() (int, any) {
			return http.StatusOK, []api.Port{port("keep", "eth0"), port("keep", "net1"), port("stale1", "eth0"), port("broken", "eth0"), port("stale2", "eth0"), byHand}
		},
		detach: func(id, _ string) (int, any) {
			if id == "broken" {
				return apiErr(http.StatusInternalServerError, api.CodeInternal, "", "delete tap: boom")()
			}
			return http.StatusNoContent, nil
		},
	})
	conf := netConf(t, "1.1.0", map[string]any{"socket": f.socket, "pendingDir": t.TempDir(),
		"cni.dev/valid-attachments": []map[string]string{{"containerID": "keep", "ifname": "eth0"}}})
	err := cmdGC(&skel.CmdArgs{StdinData: conf})
	cniError(t, err, types.ErrInternal, "broken", "delete tap: boom")
	calls := f.detachCalls()
	if len(calls) != 4 || !containsAll(calls, "keep net1", "stale1 eth0", "broken eth0", "stale2 eth0") {
		t.Errorf("GC detached %q; want every CNI port but keep/eth0, and not the port attached by hand", calls)
	}
}

// TestCheckFake covers CHECK's weftd side: the port gone (code 3) or
// holding another address than prevResult.
func TestCheckFake(t *testing.T) {
	prev, err := addResult(&NetConf{}, "/var/run/netns/wcn-none", fakeAttach)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		ports []api.Port
		code  uint
		msg   []string
	}{
		{name: "port gone", code: types.ErrUnknownContainer,
			msg: []string{"weftd has no port for container c1 interface eth0", "namespace /var/run/netns/wcn-none does not exist"}},
		{name: "other address", ports: []api.Port{{PodID: "c1", IfName: "eth0", Address: netip.MustParsePrefix("10.244.7.10/24"), MAC: fakeAttach.MAC}},
			code: types.ErrInternal, msg: []string{"weftd's port has address 10.244.7.10/24, prevResult 10.244.7.9/24"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeWeftd(t, &fakeWeftd{ports: func() (int, any) { return http.StatusOK, tt.ports }})
			conf := withPrevResult(t, netConf(t, "1.1.0", map[string]any{"socket": f.socket}), prev)
			cniError(t, doCheck(cmdArgs("c1", "/var/run/netns/wcn-none", conf)), tt.code, tt.msg...)
		})
	}
	t.Run("no prevResult", func(t *testing.T) {
		f := newFakeWeftd(t, &fakeWeftd{})
		cniError(t, doCheck(cmdArgs("c1", "/var/run/netns/wcn-none", netConf(t, "1.1.0", map[string]any{"socket": f.socket}))),
			types.ErrInvalidNetworkConfig, "prevResult")
	})
}
