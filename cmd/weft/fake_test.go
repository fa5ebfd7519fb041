package main

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/packet"
)

var (
	t0      = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	now     = t0.Add(10 * time.Minute) // the CLI's clock in tests
	mac1    = packet.MAC{0x02, 0xaa, 0, 0, 0, 1}
	mac2    = packet.MAC{0x02, 0xaa, 0, 0, 0, 2}
	subnetA = netip.MustParsePrefix("10.244.1.0/24")
	subnetB = netip.MustParsePrefix("10.244.2.0/24")
)

var (
	fakeStatus = api.Status{
		Node: "node-a", Version: "v0.0.1-test",
		Underlay: netip.MustParseAddr("192.168.50.10"), UnderlayIface: "eth0",
		Subnet: subnetA, Gateway: netip.MustParseAddr("10.244.1.1"), HostAddr: netip.MustParseAddr("10.244.1.2"),
		RouterMAC: mac1, VNI: 7, Port: 4789, MTU: 1450,
		ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16"),
		StartedAt:   t0, Uptime: api.Duration(10 * time.Minute),
		Registry: api.RegistryStatus{Backend: "etcd", State: api.RegistryDegraded, Since: t0.Add(5 * time.Minute), LastError: "context deadline exceeded",
			NotPeers: []api.NotPeer{{Node: "node-c", Why: "no spec.podCIDR yet (kube-controller-manager --allocate-node-cidrs allocates it)"}}},
		Ports: 2, Peers: 1, Offload: "tap-tso,udp-gso",
	}
	fakePorts = []api.Port{
		{
			PodID: "c0ffee00112233445566778899", PodNamespace: "default", PodName: "web-0", Netns: "/var/run/netns/p1",
			IfName: "eth0", TapName: "wt3a2b1c", IP: netip.MustParseAddr("10.244.1.3"),
			Address: netip.MustParsePrefix("10.244.1.3/24"), MAC: mac2, Gateway: netip.MustParseAddr("10.244.1.1"),
			MTU: 1450, PortID: 2, RxFrames: 10, TxFrames: 11, RxBytes: 1000, TxBytes: 3 << 20, Since: t0,
		},
		{
			PodID: "beef", Netns: "/var/run/netns/p2", IfName: "eth0", TapName: "wt99", IP: netip.MustParseAddr("10.244.1.4"),
			Address: netip.MustParsePrefix("10.244.1.4/24"), MAC: mac1, MTU: 1450, PortID: 3, Since: t0.Add(9 * time.Minute),
		},
	}
	fakeAttach = api.AttachResponse{
		PodID: "c0ffee", IfName: "eth0", Netns: "/var/run/netns/p1", TapName: "wt3a2b1c",
		IP: netip.MustParseAddr("10.244.1.3"), Address: netip.MustParsePrefix("10.244.1.3/24"),
		MAC: mac2, Gateway: netip.MustParseAddr("10.244.1.1"), MTU: 1450,
	}
	fakePeers = []api.Peer{{
		Node: "node-b", Underlay: netip.MustParseAddr("192.168.50.11"), Subnet: subnetB,
		RouterMAC: mac2, VNI: 7, Expires: now.Add(25 * time.Second),
		TxFrames: 5, RxFrames: 6, TxBytes: 500, RxBytes: 600,
	}}
	fakeFDB    = []api.FDBEntry{{MAC: mac2, Port: 2, PortName: "wt3a2b1c", Age: api.Duration(1500 * time.Millisecond)}}
	fakeRoutes = []api.Route{
		{Prefix: subnetA, Kind: api.RouteLocal},
		{Prefix: subnetB, Kind: api.RoutePeer, Via: netip.MustParseAddr("192.168.50.11"), Peer: "node-b", PeerMAC: mac2},
	}
	fakeNeigh = []api.Neighbour{{IP: netip.MustParseAddr("10.244.1.3"), MAC: mac2, Port: 2, PortName: "wt3a2b1c", Static: true, Age: api.Duration(time.Minute)}}
	fakeIPAM  = api.IPAM{Subnet: subnetA, Used: 1, Free: 250, Allocations: []api.IPAMAllocation{
		{PodID: "c0ffee", IfName: "eth0", IP: netip.MustParseAddr("10.244.1.3"), Since: t0},
	}}
	fakeSubnets = []api.Subnet{
		{Node: "node-a", Self: true, Underlay: netip.MustParseAddr("192.168.50.10"), Subnet: subnetA, RouterMAC: mac1, Expires: now.Add(time.Minute), Used: 1, Free: 250},
		{Node: "node-b", Underlay: netip.MustParseAddr("192.168.50.11"), Subnet: subnetB, RouterMAC: mac2, Expires: now.Add(-3 * time.Second), Used: api.Unknown, Free: api.Unknown},
	}
	fakeCounters = api.Counters{"drop.no_route": 3, "drop.spoofed_source": 0, "tap.rx_frames": 10}
	fakeTrace    = api.TraceResponse{
		Steps:   []api.TraceStep{{Stage: "port-check", Decision: "source ok"}, {Stage: "l3", Decision: "route 10.244.2.0/24 via node-b"}},
		Verdict: "encap node-b",
	}
)

// fakeService answers with the fake* data and records requests; err, when
// set, is returned by every method.
type fakeService struct {
	mu       sync.Mutex
	err      error
	attached []api.AttachRequest
	detached []api.DetachRequest
	traced   []api.TraceRequest
}

func (f *fakeService) Status(context.Context) (api.Status, error) { return fakeStatus, f.err }
func (f *fakeService) Ports(context.Context) ([]api.Port, error) {
	// A copy: the CLI sorts what it gets, the fake data must stay put.
	return append([]api.Port(nil), fakePorts...), f.err
}
func (f *fakeService) Attach(_ context.Context, r api.AttachRequest) (api.AttachResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.attached = append(f.attached, r)
	return fakeAttach, f.err
}
func (f *fakeService) Detach(_ context.Context, r api.DetachRequest) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.detached = append(f.detached, r)
	return f.err
}
func (f *fakeService) Peers(context.Context) ([]api.Peer, error)           { return fakePeers, f.err }
func (f *fakeService) FDB(context.Context) ([]api.FDBEntry, error)         { return fakeFDB, f.err }
func (f *fakeService) Routes(context.Context) ([]api.Route, error)         { return fakeRoutes, f.err }
func (f *fakeService) Neighbours(context.Context) ([]api.Neighbour, error) { return fakeNeigh, f.err }
func (f *fakeService) IPAM(context.Context) (api.IPAM, error)              { return fakeIPAM, f.err }
func (f *fakeService) Subnets(context.Context) ([]api.Subnet, error) {
	return append([]api.Subnet(nil), fakeSubnets...), f.err
}
func (f *fakeService) Counters(context.Context) (api.Counters, error) {
	c := api.Counters{}
	for k, v := range fakeCounters {
		c[k] = v
	}
	return c, f.err
}
func (f *fakeService) Trace(_ context.Context, r api.TraceRequest) (api.TraceResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.traced = append(f.traced, r)
	return fakeTrace, f.err
}

var _ api.Service = (*fakeService)(nil)

// serve runs an API server for svc on a fresh socket and returns its path.
func serve(t *testing.T, svc api.Service) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "weftcli")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "weftd.sock")
	ln, err := api.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	srv := api.NewServer(svc, nil)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	})
	return path
}

// runCLI runs weft with args and the test clock.
func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	c := &cli{stdout: &out, stderr: &errOut, getenv: os.Getenv, now: func() time.Time { return now }}
	code = c.main(args)
	return code, out.String(), errOut.String()
}
