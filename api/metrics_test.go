package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

type snapshotFunc func() Snapshot

func (f snapshotFunc) MetricsSnapshot() Snapshot { return f() }

func testSnapshot() Snapshot {
	var tap, udp BatchHistogram
	for _, n := range []int{1, 3, 64} {
		tap.Observe(n)
	}
	udp.Observe(500)
	return Snapshot{
		Ports: []PortCounters{
			{Pod: "default/web-0", Port: "wt3a2b1c", RxFrames: 10, TxFrames: 11, RxBytes: 1000, TxBytes: 1100},
		},
		Peers: []PeerCounters{
			{Peer: "node-b", TxFrames: 5, RxFrames: 6, TxBytes: 500, RxBytes: 600},
		},
		Drops:           map[string]uint64{"no_route": 3, "spoofed_source": 0},
		FDBEntries:      4,
		IPAMUsed:        2,
		IPAMFree:        249,
		RegistryHealthy: true,
		BatchSizes:      map[string]HistogramSnapshot{"tap": tap.Snapshot(), "udp": udp.Snapshot()},
		Offload:         map[string]uint64{"segments": 440, "drained_frames": 7},
		PolicyDrops:     []PolicyDrops{{Policy: "x/deny-all", Ingress: 9, Egress: 2}},
	}
}

func TestCollector(t *testing.T) {
	c := NewCollector(snapshotFunc(testSnapshot))
	const want = `
# HELP weft_batch_size Frames per read batch, by source.
# TYPE weft_batch_size histogram
weft_batch_size_bucket{source="tap",le="1"} 1
weft_batch_size_bucket{source="tap",le="2"} 1
weft_batch_size_bucket{source="tap",le="4"} 2
weft_batch_size_bucket{source="tap",le="8"} 2
weft_batch_size_bucket{source="tap",le="16"} 2
weft_batch_size_bucket{source="tap",le="32"} 2
weft_batch_size_bucket{source="tap",le="64"} 3
weft_batch_size_bucket{source="tap",le="128"} 3
weft_batch_size_bucket{source="tap",le="256"} 3
weft_batch_size_bucket{source="tap",le="+Inf"} 3
weft_batch_size_sum{source="tap"} 68
weft_batch_size_count{source="tap"} 3
weft_batch_size_bucket{source="udp",le="1"} 0
weft_batch_size_bucket{source="udp",le="2"} 0
weft_batch_size_bucket{source="udp",le="4"} 0
weft_batch_size_bucket{source="udp",le="8"} 0
weft_batch_size_bucket{source="udp",le="16"} 0
weft_batch_size_bucket{source="udp",le="32"} 0
weft_batch_size_bucket{source="udp",le="64"} 0
weft_batch_size_bucket{source="udp",le="128"} 0
weft_batch_size_bucket{source="udp",le="256"} 0
weft_batch_size_bucket{source="udp",le="+Inf"} 1
weft_batch_size_sum{source="udp"} 500
weft_batch_size_count{source="udp"} 1
# HELP weft_drops_total Frames dropped, by reason.
# TYPE weft_drops_total counter
weft_drops_total{reason="no_route"} 3
weft_drops_total{reason="spoofed_source"} 0
# HELP weft_fdb_entries MAC addresses in the switch's forwarding database.
# TYPE weft_fdb_entries gauge
weft_fdb_entries 4
# HELP weft_ipam_free Pod addresses free in this node's subnet.
# TYPE weft_ipam_free gauge
weft_ipam_free 249
# HELP weft_ipam_used Pod addresses allocated in this node's subnet.
# TYPE weft_ipam_used gauge
weft_ipam_used 2
# HELP weft_offload_total Work of the offload data path, by kind: TSO super-frames read, segments sent, coalesced runs and the segments they merged, frames drained from a TAP right after a write.
# TYPE weft_offload_total counter
weft_offload_total{kind="drained_frames"} 7
weft_offload_total{kind="segments"} 440
# HELP weft_peer_rx_bytes_total Bytes of inner frames received from a peer node.
# TYPE weft_peer_rx_bytes_total counter
weft_peer_rx_bytes_total{peer="node-b"} 600
# HELP weft_peer_rx_frames_total Frames received from a peer node over VXLAN.
# TYPE weft_peer_rx_frames_total counter
weft_peer_rx_frames_total{peer="node-b"} 6
# HELP weft_peer_tx_bytes_total Bytes of inner frames sent to a peer node.
# TYPE weft_peer_tx_bytes_total counter
weft_peer_tx_bytes_total{peer="node-b"} 500
# HELP weft_peer_tx_frames_total Frames sent to a peer node over VXLAN.
# TYPE weft_peer_tx_frames_total counter
weft_peer_tx_frames_total{peer="node-b"} 5
# HELP weft_peers Peer nodes with a live registry lease.
# TYPE weft_peers gauge
weft_peers 1
# HELP weft_policy_drops_total Frames dropped by NetworkPolicy, by policy (namespace/name) and the direction it isolates: a pod it isolates in that direction is allowed the flow by no policy selecting it. A frame counts under every policy isolating that pod in that direction (drops_total by reason counts it once). A deleted policy's series go with it.
# TYPE weft_policy_drops_total counter
weft_policy_drops_total{direction="egress",policy="x/deny-all"} 2
weft_policy_drops_total{direction="ingress",policy="x/deny-all"} 9
# HELP weft_port_rx_bytes_total Bytes received from a pod port.
# TYPE weft_port_rx_bytes_total counter
weft_port_rx_bytes_total{pod="default/web-0",port="wt3a2b1c"} 1000
# HELP weft_port_rx_frames_total Frames received from a pod port.
# TYPE weft_port_rx_frames_total counter
weft_port_rx_frames_total{pod="default/web-0",port="wt3a2b1c"} 10
# HELP weft_port_tx_bytes_total Bytes sent to a pod port.
# TYPE weft_port_tx_bytes_total counter
weft_port_tx_bytes_total{pod="default/web-0",port="wt3a2b1c"} 1100
# HELP weft_port_tx_frames_total Frames sent to a pod port.
# TYPE weft_port_tx_frames_total counter
weft_port_tx_frames_total{pod="default/web-0",port="wt3a2b1c"} 11
# HELP weft_registry_healthy 1 when the last registry operation succeeded, else 0.
# TYPE weft_registry_healthy gauge
weft_registry_healthy 1
`
	names := []string{
		"weft_batch_size", "weft_drops_total", "weft_fdb_entries", "weft_ipam_free", "weft_ipam_used", "weft_offload_total",
		"weft_peer_rx_bytes_total", "weft_peer_rx_frames_total", "weft_peer_tx_bytes_total", "weft_peer_tx_frames_total",
		"weft_peers", "weft_policy_drops_total", "weft_port_rx_bytes_total", "weft_port_rx_frames_total", "weft_port_tx_bytes_total",
		"weft_port_tx_frames_total", "weft_registry_healthy",
	}
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	if n := testutil.CollectAndCount(c, "weft_build_info"); n != 1 {
		t.Errorf("weft_build_info series = %d, want 1", n)
	}
}

func TestCollectorEmptySnapshot(t *testing.T) {
	c := NewCollector(snapshotFunc(func() Snapshot { return Snapshot{} }))
	want := "# HELP weft_peers Peer nodes with a live registry lease.\n# TYPE weft_peers gauge\nweft_peers 0\n" +
		"# HELP weft_registry_healthy 1 when the last registry operation succeeded, else 0.\n# TYPE weft_registry_healthy gauge\nweft_registry_healthy 0\n"
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "weft_peers", "weft_registry_healthy"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(c, "weft_port_rx_frames_total", "weft_batch_size"); n != 0 {
		t.Errorf("empty snapshot produced %d port/batch series", n)
	}
}

func TestBatchHistogramBuckets(t *testing.T) {
	tests := []struct {
		n      int
		bucket int
	}{
		{0, 0}, {1, 0}, {2, 1}, {3, 2}, {4, 2}, {5, 3}, {64, 6}, {65, 7}, {256, 8}, {257, batchBuckets}, {1 << 20, batchBuckets},
	}
	for _, tc := range tests {
		var h BatchHistogram
		h.Observe(tc.n)
		s := h.Snapshot()
		if s.Counts[tc.bucket] != 1 || s.Count() != 1 || s.Sum != uint64(tc.n) {
			t.Errorf("Observe(%d): counts %v sum %d, want bucket %d", tc.n, s.Counts, s.Sum, tc.bucket)
		}
	}
	var a, b BatchHistogram
	a.Observe(1)
	b.Observe(1)
	b.Observe(300)
	sa := a.Snapshot()
	sa.Add(b.Snapshot())
	if sa.Counts[0] != 2 || sa.Counts[batchBuckets] != 1 || sa.Sum != 302 {
		t.Errorf("merged snapshot = %+v", sa)
	}
}

func TestBatchHistogramObserveNoAllocs(t *testing.T) {
	var h BatchHistogram
	if n := testing.AllocsPerRun(1000, func() { h.Observe(17) }); n != 0 {
		t.Errorf("Observe allocates %v times per call, want 0", n)
	}
}

func BenchmarkBatchHistogramObserve(b *testing.B) {
	var h BatchHistogram
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		h.Observe(n & 127)
		n++
	}
}

func TestMetricsHandler(t *testing.T) {
	reg := NewRegistry(snapshotFunc(testSnapshot))
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{`weft_fdb_entries 4`, `weft_drops_total{reason="no_route"} 3`, `go_goroutines`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestServeMetricsListens(t *testing.T) {
	// Only binds to loopback; no traffic is sent (the handler is tested
	// above without a socket).
	m, err := ServeMetrics("127.0.0.1:0", prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.Addr() == nil || !strings.HasPrefix(m.Addr().String(), "127.0.0.1:") {
		t.Errorf("Addr() = %v, want 127.0.0.1:port", m.Addr())
	}
	if err := m.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if _, err := ServeMetrics("127.0.0.1:99999", prometheus.NewRegistry(), nil); err == nil || !strings.Contains(err.Error(), "metrics: listen") {
		t.Errorf("ServeMetrics(bad port) = %v, want a listen error", err)
	}
}
