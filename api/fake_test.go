package api

import (
	"context"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/packet"
)

// fakeService answers with fixed data, records the requests it got, and
// returns err from every method when err is set.
type fakeService struct {
	mu       sync.Mutex
	err      error
	panicMsg string
	attached []AttachRequest
	detached []DetachRequest
	traced   []TraceRequest
}

var (
	t0      = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	mac1    = packet.MAC{0x02, 0xaa, 0, 0, 0, 1}
	mac2    = packet.MAC{0x02, 0xaa, 0, 0, 0, 2}
	subnetA = netip.MustParsePrefix("10.244.1.0/24")
	subnetB = netip.MustParsePrefix("10.244.2.0/24")
)

var (
	wantStatus = Status{
		Node: "node-a", Version: "v0.0.1-test",
		Underlay: netip.MustParseAddr("192.168.50.10"), UnderlayIface: "eth0",
		Subnet: subnetA, Gateway: netip.MustParseAddr("10.244.1.1"), HostAddr: netip.MustParseAddr("10.244.1.2"),
		RouterMAC: mac1, VNI: 7, Port: 4789, MTU: 1450,
		ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16"),
		StartedAt:   t0, Uptime: Duration(90 * time.Second),
		Registry: RegistryStatus{Backend: "etcd", State: RegistryDegraded, Since: t0.Add(time.Minute), LastError: "context deadline exceeded"},
		Ports:    1, Peers: 1, Offload: "tap-tso,udp-gso",
	}
	wantPorts = []Port{{
		PodID: "c0ffee", PodNamespace: "default", PodName: "web-0", Netns: "/var/run/netns/p1",
		IfName: "eth0", TapName: "wt3a2b1c", IP: netip.MustParseAddr("10.244.1.3"),
		Address: netip.MustParsePrefix("10.244.1.3/24"), MAC: mac2, Gateway: netip.MustParseAddr("10.244.1.1"),
		MTU: 1450, PortID: 2, RxFrames: 10, TxFrames: 11, RxBytes: 1000, TxBytes: 1100, Since: t0,
	}}
	wantAttach = AttachResponse{
		PodID: "c0ffee", IfName: "eth0", Netns: "/var/run/netns/p1", TapName: "wt3a2b1c",
		IP: netip.MustParseAddr("10.244.1.3"), Address: netip.MustParsePrefix("10.244.1.3/24"),
		MAC: mac2, Gateway: netip.MustParseAddr("10.244.1.1"), MTU: 1450,
	}
	wantPeers = []Peer{{
		Node: "node-b", Underlay: netip.MustParseAddr("192.168.50.11"), Subnet: subnetB,
		RouterMAC: mac2, VNI: 7, Expires: t0.Add(30 * time.Second),
		TxFrames: 5, RxFrames: 6, TxBytes: 500, RxBytes: 600,
	}}
	wantFDB    = []FDBEntry{{MAC: mac2, Port: 2, PortName: "wt3a2b1c", Age: Duration(1500 * time.Millisecond)}}
	wantRoutes = []Route{
		{Prefix: subnetA, Kind: RouteLocal},
		{Prefix: subnetB, Kind: RoutePeer, Via: netip.MustParseAddr("192.168.50.11"), Peer: "node-b", PeerMAC: mac2},
	}
	wantNeigh = []Neighbour{{IP: netip.MustParseAddr("10.244.1.3"), MAC: mac2, Port: 2, PortName: "wt3a2b1c", Static: true, Age: Duration(time.Minute)}}
	wantIPAM  = IPAM{Subnet: subnetA, Used: 1, Free: 250, Allocations: []IPAMAllocation{
		{PodID: "c0ffee", IfName: "eth0", IP: netip.MustParseAddr("10.244.1.3"), Since: t0},
	}}
	wantSubnets = []Subnet{
		{Node: "node-a", Self: true, Underlay: netip.MustParseAddr("192.168.50.10"), Subnet: subnetA, RouterMAC: mac1, Expires: t0, Used: 1, Free: 250},
		{Node: "node-b", Underlay: netip.MustParseAddr("192.168.50.11"), Subnet: subnetB, RouterMAC: mac2, Expires: t0, Used: Unknown, Free: Unknown},
	}
	wantCounters = Counters{"drop.no_route": 3, "tap.rx_frames": 10}
	wantTrace    = TraceResponse{
		Steps:   []TraceStep{{Stage: "port-check", Decision: "source ok"}, {Stage: "l3", Decision: "route 10.244.2.0/24 via node-b"}},
		Verdict: "encap node-b",
	}
)

func (f *fakeService) fail() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.panicMsg != "" {
		panic(f.panicMsg)
	}
	return f.err
}

func (f *fakeService) Status(context.Context) (Status, error) { return wantStatus, f.fail() }
func (f *fakeService) Ports(context.Context) ([]Port, error)  { return wantPorts, f.fail() }
func (f *fakeService) Attach(_ context.Context, r AttachRequest) (AttachResponse, error) {
	if err := f.fail(); err != nil {
		return AttachResponse{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.attached = append(f.attached, r)
	return wantAttach, nil
}
func (f *fakeService) Detach(_ context.Context, r DetachRequest) error {
	if err := f.fail(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.detached = append(f.detached, r)
	return nil
}
func (f *fakeService) Peers(context.Context) ([]Peer, error)           { return wantPeers, f.fail() }
func (f *fakeService) FDB(context.Context) ([]FDBEntry, error)         { return wantFDB, f.fail() }
func (f *fakeService) Routes(context.Context) ([]Route, error)         { return wantRoutes, f.fail() }
func (f *fakeService) Neighbours(context.Context) ([]Neighbour, error) { return wantNeigh, f.fail() }
func (f *fakeService) IPAM(context.Context) (IPAM, error)              { return wantIPAM, f.fail() }
func (f *fakeService) Subnets(context.Context) ([]Subnet, error)       { return wantSubnets, f.fail() }
func (f *fakeService) Counters(context.Context) (Counters, error)      { return wantCounters, f.fail() }
func (f *fakeService) Trace(_ context.Context, r TraceRequest) (TraceResponse, error) {
	if err := f.fail(); err != nil {
		return TraceResponse{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.traced = append(f.traced, r)
	return wantTrace, nil
}

var _ Service = (*fakeService)(nil)

// startServer serves svc on a fresh socket under t.TempDir() and returns
// the socket path; the server is shut down when the test ends.
func startServer(t *testing.T, svc Service) string {
	t.Helper()
	// A short directory: t.TempDir() paths can exceed sun_path.
	dir, err := shortTempDir(t)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "run", "weftd.sock")
	srv := NewServer(svc, nil)
	ln, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen(%s): %v", path, err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return path
}
