package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// DefaultMetricsAddr is where weftd serves /metrics unless configured
// otherwise: localhost only, since the metrics name pods.
const DefaultMetricsAddr = "127.0.0.1:9470"

// MetricsSource hands the collector a copy of the node's counters. It is
// called once per scrape, from the scrape's goroutine, so the data path
// only ever bumps its own atomic counters and never touches Prometheus
// objects.
type MetricsSource interface {
	MetricsSnapshot() Snapshot
}

// Snapshot is a node's state as the metrics show it. Counters are totals
// since the node started and must never go down.
type Snapshot struct {
	Ports           []PortCounters
	Peers           []PeerCounters    // every peer with a live lease
	Drops           map[string]uint64 // by drop reason, e.g. "no_route"
	FDBEntries      int
	IPAMUsed        int
	IPAMFree        int
	RegistryHealthy bool
	// BatchSizes are the sizes of read batches by source ("tap", "udp").
	BatchSizes map[string]HistogramSnapshot
	// Offload counts the offload data path's work by kind (tso_frames,
	// segments, coalesced_runs, coalesced_segments, drained_frames,
	// partial_csum_tx, partial_csum_rx); empty with offloads off.
	Offload map[string]uint64
	// Conntrack is the connection tracking table's state; ServiceNewFlows
	// counts the flows this node load-balanced, by service frontend
	// ("namespace/name:port").
	Conntrack       ConntrackCounters
	ServiceNewFlows map[string]uint64
	// PolicyDrops are the NetworkPolicy drops of every policy in force
	// (a deleted policy's go with it).
	PolicyDrops []PolicyDrops
}

// PolicyDrops is one NetworkPolicy's drops by the direction it isolates:
// frames of flows denied because a pod it isolates in that direction is
// allowed the flow by no policy selecting it. Such a drop counts under
// every policy isolating that pod in that direction (any of them could
// have allowed it); weft_drops_total{reason="policy_ingress"} and
// friends count each frame once.
type PolicyDrops struct {
	Policy          string // "namespace/name"
	Ingress, Egress uint64
}

// ConntrackCounters are the connection tracking table's counters.
type ConntrackCounters struct {
	Entries  uint64 // flows tracked now (a gauge)
	Max      uint64 // the table's size (a gauge)
	Inserts  uint64 // flows added
	Full     uint64 // new flows dropped: table full
	Clashes  uint64 // new flows dropped: reply tuple taken
	Expired  uint64 // flows aged out
	Flushed  uint64 // flows removed by a flush or a backend's removal
	Replaced uint64 // expired flows replaced before aging reached them
}

// PortCounters are one port's traffic counters. Pod and Port together
// must be unique within a Snapshot.
type PortCounters struct {
	Pod      string // "namespace/name", or the pod ID when the name is unknown
	Port     string // TAP device name
	RxFrames uint64 // from the pod
	TxFrames uint64 // to the pod
	RxBytes  uint64
	TxBytes  uint64
}

// PeerCounters are the overlay traffic with one peer node.
type PeerCounters struct {
	Peer     string // node name
	TxFrames uint64
	RxFrames uint64
	TxBytes  uint64
	RxBytes  uint64
}

// Batch size buckets: upper bounds 1, 2, 4, ..., 256, then +Inf.
const (
	batchBuckets   = 9
	batchBucketMax = 1 << (batchBuckets - 1)
)

// BatchHistogram counts batch sizes into power-of-two buckets. Observe is
// two atomic adds and never allocates; give each worker its own to keep
// the adds off shared cache lines, and add their snapshots together.
type BatchHistogram struct {
	counts [batchBuckets + 1]atomic.Uint64
	sum    atomic.Uint64
}

// Observe records one batch of n frames.
func (h *BatchHistogram) Observe(n int) {
	i := batchBuckets // +Inf
	if n <= batchBucketMax {
		i = 0
		if n > 1 {
			i = bits.Len(uint(n - 1))
		}
	}
	h.counts[i].Add(1)
	h.sum.Add(uint64(max(n, 0)))
}

// Snapshot returns the counts so far.
func (h *BatchHistogram) Snapshot() HistogramSnapshot {
	var s HistogramSnapshot
	for i := range h.counts {
		s.Counts[i] = h.counts[i].Load()
	}
	s.Sum = h.sum.Load()
	return s
}

// HistogramSnapshot is a BatchHistogram's state: Counts[i] counts batches
// of size in (2^(i-1), 2^i]; the last element counts those above 256.
type HistogramSnapshot struct {
	Counts [batchBuckets + 1]uint64
	Sum    uint64
}

// Add merges o into s.
func (s *HistogramSnapshot) Add(o HistogramSnapshot) {
	for i := range s.Counts {
		s.Counts[i] += o.Counts[i]
	}
	s.Sum += o.Sum
}

// Count is the number of batches observed.
func (s HistogramSnapshot) Count() uint64 {
	var n uint64
	for _, c := range s.Counts {
		n += c
	}
	return n
}

// Collector is a prometheus.Collector over a MetricsSource.
type Collector struct {
	src MetricsSource

	portRxFrames, portTxFrames, portRxBytes, portTxBytes *prometheus.Desc
	peerTxFrames, peerRxFrames, peerTxBytes, peerRxBytes *prometheus.Desc
	drops, fdbEntries, peers, ipamUsed, ipamFree         *prometheus.Desc
	batchSize, registryHealthy, buildInfo, offload       *prometheus.Desc

	ctEntries, ctMax, ctInserts, ctFull, ctClashes, ctRemoved, svcNewFlows *prometheus.Desc
	policyDrops                                                            *prometheus.Desc
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector returns a collector that reads src on every scrape.
func NewCollector(src MetricsSource) *Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("weft_"+name, help, labels, nil)
	}
	return &Collector{
		src:             src,
		portRxFrames:    d("port_rx_frames_total", "Frames received from a pod port.", "pod", "port"),
		portTxFrames:    d("port_tx_frames_total", "Frames sent to a pod port.", "pod", "port"),
		portRxBytes:     d("port_rx_bytes_total", "Bytes received from a pod port.", "pod", "port"),
		portTxBytes:     d("port_tx_bytes_total", "Bytes sent to a pod port.", "pod", "port"),
		peerTxFrames:    d("peer_tx_frames_total", "Frames sent to a peer node over VXLAN.", "peer"),
		peerRxFrames:    d("peer_rx_frames_total", "Frames received from a peer node over VXLAN.", "peer"),
		peerTxBytes:     d("peer_tx_bytes_total", "Bytes of inner frames sent to a peer node.", "peer"),
		peerRxBytes:     d("peer_rx_bytes_total", "Bytes of inner frames received from a peer node.", "peer"),
		drops:           d("drops_total", "Frames dropped, by reason.", "reason"),
		fdbEntries:      d("fdb_entries", "MAC addresses in the switch's forwarding database."),
		peers:           d("peers", "Peer nodes with a live registry lease."),
		ipamUsed:        d("ipam_used", "Pod addresses allocated in this node's subnet."),
		ipamFree:        d("ipam_free", "Pod addresses free in this node's subnet."),
		batchSize:       d("batch_size", "Frames per read batch, by source.", "source"),
		registryHealthy: d("registry_healthy", "1 when the last registry operation succeeded, else 0."),
		buildInfo:       d("build_info", "Always 1; the version label says which weft runs.", "version"),
		offload:         d("offload_total", "Work of the offload data path, by kind: TSO super-frames read, segments sent, coalesced runs and the segments they merged, frames drained from a TAP right after a write.", "kind"),
		ctEntries:       d("conntrack_entries", "Flows in the connection tracking table."),
		ctMax:           d("conntrack_max", "Size of the connection tracking table (flows)."),
		ctInserts:       d("conntrack_inserts_total", "Flows added to the connection tracking table."),
		ctFull:          d("conntrack_full_drops_total", "New flows dropped because the connection tracking table was full."),
		ctClashes:       d("conntrack_clash_drops_total", "New flows dropped because their reply tuple belonged to another flow."),
		ctRemoved:       d("conntrack_removed_total", "Flows removed from the connection tracking table, by why: expired, flushed, replaced.", "why"),
		svcNewFlows:     d("service_new_flows_total", "New flows this node load-balanced to a backend, by service frontend.", "service"),
		policyDrops: d("policy_drops_total", "Frames dropped by NetworkPolicy, by policy (namespace/name) and the direction it isolates: "+
			"a pod it isolates in that direction is allowed the flow by no policy selecting it. A frame counts under every policy "+
			"isolating that pod in that direction (drops_total by reason counts it once). A deleted policy's series go with it.",
			"policy", "direction"),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.portRxFrames, c.portTxFrames, c.portRxBytes, c.portTxBytes,
		c.peerTxFrames, c.peerRxFrames, c.peerTxBytes, c.peerRxBytes,
		c.drops, c.fdbEntries, c.peers, c.ipamUsed, c.ipamFree,
		c.batchSize, c.registryHealthy, c.buildInfo, c.offload,
		c.ctEntries, c.ctMax, c.ctInserts, c.ctFull, c.ctClashes, c.ctRemoved, c.svcNewFlows, c.policyDrops,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.src.MetricsSnapshot()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, p := range s.Ports {
		counter(c.portRxFrames, p.RxFrames, p.Pod, p.Port)
		counter(c.portTxFrames, p.TxFrames, p.Pod, p.Port)
		counter(c.portRxBytes, p.RxBytes, p.Pod, p.Port)
		counter(c.portTxBytes, p.TxBytes, p.Pod, p.Port)
	}
	for _, p := range s.Peers {
		counter(c.peerTxFrames, p.TxFrames, p.Peer)
		counter(c.peerRxFrames, p.RxFrames, p.Peer)
		counter(c.peerTxBytes, p.TxBytes, p.Peer)
		counter(c.peerRxBytes, p.RxBytes, p.Peer)
	}
	for reason, n := range s.Drops {
		counter(c.drops, n, reason)
	}
	for kind, n := range s.Offload {
		counter(c.offload, n, kind)
	}
	ct := &s.Conntrack
	gauge(c.ctEntries, float64(ct.Entries))
	gauge(c.ctMax, float64(ct.Max))
	counter(c.ctInserts, ct.Inserts)
	counter(c.ctFull, ct.Full)
	counter(c.ctClashes, ct.Clashes)
	counter(c.ctRemoved, ct.Expired, "expired")
	counter(c.ctRemoved, ct.Flushed, "flushed")
	counter(c.ctRemoved, ct.Replaced, "replaced")
	for svc, n := range s.ServiceNewFlows {
		counter(c.svcNewFlows, n, svc)
	}
	for _, p := range s.PolicyDrops {
		counter(c.policyDrops, p.Ingress, p.Policy, "ingress")
		counter(c.policyDrops, p.Egress, p.Policy, "egress")
	}
	gauge(c.fdbEntries, float64(s.FDBEntries))
	gauge(c.peers, float64(len(s.Peers)))
	gauge(c.ipamUsed, float64(s.IPAMUsed))
	gauge(c.ipamFree, float64(s.IPAMFree))
	healthy := 0.0
	if s.RegistryHealthy {
		healthy = 1
	}
	gauge(c.registryHealthy, healthy)
	gauge(c.buildInfo, 1, BuildVersion())
	for source, h := range s.BatchSizes {
		buckets := make(map[float64]uint64, batchBuckets)
		var cum uint64
		for i := range batchBuckets {
			cum += h.Counts[i]
			buckets[float64(uint(1)<<i)] = cum
		}
		ch <- prometheus.MustNewConstHistogram(c.batchSize, h.Count(), float64(h.Sum), buckets, source)
	}
}

// NewRegistry returns a registry holding a Collector over src and the
// standard Go runtime and process collectors.
func NewRegistry(src MetricsSource) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		NewCollector(src),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// MetricsServer serves /metrics over TCP.
type MetricsServer struct {
	ln  net.Listener
	srv *http.Server
}

// ServeMetrics listens on addr (host:port; port 0 picks one) and serves g
// at /metrics in the background until Shutdown. A nil logger discards
// logs.
func ServeMetrics(addr string, g prometheus.Gatherer, logger *slog.Logger) (*MetricsServer, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen %s: %w", addr, err)
	}
	errLog := slog.NewLogLogger(logger.Handler(), slog.LevelWarn)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorLog: errLog}))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, `<html><body><a href="/metrics">/metrics</a></body></html>`+"\n")
	})
	m := &MetricsServer{ln: ln, srv: &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          errLog,
	}}
	go func() {
		logger.Info("metrics: serving", "addr", ln.Addr().String())
		if err := m.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("metrics: server stopped", "err", err)
		}
	}()
	return m, nil
}

// Addr is the address the server listens on.
func (m *MetricsServer) Addr() net.Addr { return m.ln.Addr() }

// Shutdown stops the server, waiting for scrapes in flight until ctx ends.
func (m *MetricsServer) Shutdown(ctx context.Context) error { return m.srv.Shutdown(ctx) }
