package main

import (
	"fmt"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/yaml"

	"github.com/weftnet/weft/objects"
	"github.com/weftnet/weft/policy"
)

func TestParseKernelResult(t *testing.T) {
	line := "RESULT system=kernel-vxlan pod_offload=default tcp1_gbps=9.70[9.51-9.80] tcp4_gbps=10.10[9.90-10.40] " +
		"udp64_rx_pps=94000[91000-95500] udp_loss=[1.5% 3% 2.25%] ping_avg_ms=0.060[0.055-0.071] " +
		"daemon_cpu_pct(tcp1/tcp4/udp)=0/0/0 ping_p50_ms=0.052 ping_p99_ms=0.094 pod_mtu=1450 L3-routed flannel-style"
	r, err := parseKernelResult(line)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want stat
	}{
		{"tcp1", r.TCP1, stat{9.70, 9.51, 9.80, 1}},
		{"tcp4", r.TCP4, stat{10.10, 9.90, 10.40, 1}},
		{"udp", r.UDP, stat{94000, 91000, 95500, 1}},
		{"ping", r.Ping, stat{0.060, 0.055, 0.071, 1}},
		{"loss", r.UDPLoss, stat{2.25, 1.5, 3, 3}},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %+v, want %+v", c.name, c.got, c.want)
		}
	}
	if r.System != "kernel-vxlan" || r.PodOffload != "default" || r.DaemonCPU != "0/0/0" {
		t.Errorf("system %q offload %q daemon cpu %q", r.System, r.PodOffload, r.DaemonCPU)
	}
	if !r.haveP99 || r.PingP99 != 0.094 || !r.haveP50 || r.PingP50 != 0.052 {
		t.Errorf("p50 %v/%v p99 %v/%v", r.PingP50, r.haveP50, r.PingP99, r.haveP99)
	}
}

// TestMachineFromAnchorLog reads the anchor's per-repetition TCP lines
// (common.sh anc_run_tests) into machine CPU seconds per GB: busy share x
// CPUs over GB/s. Other lines, and runs without throughput, are skipped.
func TestMachineFromAnchorLog(t *testing.T) {
	log := `[09:03:58] system=kernel-vxlan reps=3 t=10 pod_offload=default kernel=6.18.44 cpus=2
[09:04:11] tcp1   rep1: 12.000 Gbit/s retr=0 daemonCPU=0% machineCPU=60% bgCPU_before=1% waited=0s
[09:04:24] tcp1   rep2: 10.000 Gbit/s retr=3 daemonCPU=0% machineCPU=50% bgCPU_before=2% waited=0s
[09:04:37] tcp4   rep1: 16.000 Gbit/s retr=0 daemonCPU=0% machineCPU=100% bgCPU_before=1% waited=0s
[09:04:50] tcp4   rep2: 0.000 Gbit/s error daemonCPU=0% machineCPU=3% bgCPU_before=1% waited=0s
[09:05:03] udp64  rep1: 90000 pps received sent_pps=1 loss=0% daemonCPU=0% machineCPU=99% bgCPU_before=1% waited=0s
`
	var r kernelResult
	r.machineFromAnchorLog(log, 2)
	// tcp1: 0.6*2/1.5 = 0.8 and 0.5*2/1.25 = 0.8; tcp4: 1*2/2 = 1.
	if r.MachineGB1.N != 2 || math.Abs(r.MachineGB1.Median-0.8) > 1e-9 {
		t.Errorf("tcp1 = %+v, want 0.8 from 2 runs", r.MachineGB1)
	}
	if r.MachineGB4.N != 1 || math.Abs(r.MachineGB4.Median-1) > 1e-9 {
		t.Errorf("tcp4 = %+v, want 1 from 1 run", r.MachineGB4)
	}
	r.machineFromAnchorLog("RESULT system=kernel-vxlan tcp1_gbps=1.00[1.00-1.00]\n", 2)
	if r.MachineGB1.Valid() || r.MachineGB4.Valid() {
		t.Errorf("no per-run lines: %+v %+v, want unknown", r.MachineGB1, r.MachineGB4)
	}
}

func TestParseKernelResultRejects(t *testing.T) {
	for _, line := range []string{"", "tcp1_gbps=1[1-1]", "RESULT system=x", "RESULT tcp1_gbps=n/a[n/a-n/a]"} {
		if _, err := parseKernelResult(line); err == nil {
			t.Errorf("parseKernelResult(%q): no error", line)
		}
	}
}

func TestParseIperf(t *testing.T) {
	tcp := []byte(`{"start":{},"end":{"sum_sent":{"seconds":10,"bytes":1.3e10,"bits_per_second":1.04e10,"retransmits":7},
		"sum_received":{"seconds":10.001,"bytes":1.25e10,"bits_per_second":1.0e10}}}`)
	f, err := parseIperfTCP(tcp)
	if err != nil {
		t.Fatal(err)
	}
	if f.Gbps != 10 || f.Bytes != 1.25e10 || f.Retransmits != 7 {
		t.Errorf("tcp = %+v", f)
	}
	udpNew := []byte(`{"end":{"sum_sent":{"seconds":10,"packets":2000000},
		"sum_received":{"seconds":10,"packets":2000000,"lost_packets":500000,"lost_percent":25}}}`)
	udpOld := []byte(`{"end":{"sum":{"seconds":10,"packets":2000000,"lost_packets":500000,"lost_percent":25}}}`)
	for name, b := range map[string][]byte{"sum_received": udpNew, "sum": udpOld} {
		u, err := parseIperfUDP(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if u.RxPPS != 150000 || u.LossPct != 25 || u.TxPPS != 200000 {
			t.Errorf("%s: udp = %+v", name, u)
		}
	}
	for name, b := range map[string]string{
		"error":   `{"error":"unable to connect to server"}`,
		"garbage": `not json`,
		"empty":   `{"end":{}}`,
	} {
		if _, err := parseIperfTCP([]byte(b)); err == nil {
			t.Errorf("tcp %s: no error", name)
		}
		if _, err := parseIperfUDP([]byte(b)); err == nil {
			t.Errorf("udp %s: no error", name)
		}
	}
}

func TestParsePing(t *testing.T) {
	var b strings.Builder
	b.WriteString("PING 10.244.2.3 (10.244.2.3) 56(84) bytes of data.\n")
	for i := 1; i <= 100; i++ {
		// rtts 0.01 .. 1.00 ms
		fmt.Fprintf(&b, "64 bytes from 10.244.2.3: icmp_seq=%d ttl=62 time=%.2f ms\n", i, float64(i)/100)
	}
	b.WriteString("rtt min/avg/max/mdev = 0.010/0.505/1.000/0.288 ms\n")
	f, err := parsePing([]byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if f.N != 100 || math.Abs(f.Avg-0.505) > 1e-9 || f.P50 != 0.50 || f.P99 != 0.99 || f.Max != 1 {
		t.Errorf("ping = %+v", f)
	}
	if _, err := parsePing([]byte("100 packets transmitted, 0 received, 100% packet loss\n")); err == nil {
		t.Error("no replies: no error")
	}
}

func TestStatOf(t *testing.T) {
	cases := []struct {
		in   []float64
		want stat
	}{
		{[]float64{3, 1, 2}, stat{2, 1, 3, 3}},
		{[]float64{4, 1, 2, 3}, stat{2.5, 1, 4, 4}},
		{[]float64{7}, stat{7, 7, 7, 1}},
	}
	for _, c := range cases {
		if got := statOf(c.in); got != c.want {
			t.Errorf("statOf(%v) = %+v, want %+v", c.in, got, c.want)
		}
	}
	if statOf(nil).Valid() {
		t.Error("statOf(nil) is valid")
	}
}

func TestProcStatTicks(t *testing.T) {
	// The command name may hold spaces and parentheses.
	line := []byte("1234 (weft d) (x)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 12345 0 0\n")
	if u, s := procStatTicks(line); u != 250 || s != 50 {
		t.Errorf("procStatTicks = %v, %v, want 250, 50", u, s)
	}
	if u, s := procStatTicks([]byte("garbage")); u != 0 || s != 0 {
		t.Errorf("procStatTicks(garbage) = %v, %v, want 0, 0", u, s)
	}
}

func TestReplaceSection(t *testing.T) {
	sec := sectionBegin + "\nnew\n" + sectionEnd + "\n"
	cases := []struct {
		name, doc, want string
	}{
		{"empty file", "", "# Benchmarks\n\n" + sec},
		{"append", "# Benchmarks\n\nothers' text", "# Benchmarks\n\nothers' text\n\n" + sec},
		{"replace", "head\n" + sectionBegin + "\nold\nold\n" + sectionEnd + "\ntail\n", "head\n" + sec + "tail\n"},
		{"replace at end without newline", "head\n" + sectionBegin + "\nold\n" + sectionEnd, "head\n" + sec},
	}
	for _, c := range cases {
		got, err := replaceSection(c.doc, sec)
		if err != nil || got != c.want {
			t.Errorf("%s: got %q, %v; want %q", c.name, got, err, c.want)
		}
	}
	for _, bad := range []string{
		sectionEnd + "\n" + sectionBegin,
		sectionBegin + "\nno end",
		sectionBegin + sectionEnd + sectionBegin + sectionEnd,
	} {
		if _, err := replaceSection(bad, sec); err == nil {
			t.Errorf("replaceSection(%q): no error", bad)
		}
	}
}

func TestReportAndChart(t *testing.T) {
	kr, err := parseKernelResult("RESULT system=kernel-vxlan tcp1_gbps=10.00[9.00-11.00] tcp4_gbps=12.00[11.00-13.00] " +
		"udp64_rx_pps=100000[90000-110000] udp_loss=[1% 2% 3%] ping_avg_ms=0.050[0.040-0.060] ping_p99_ms=0.100")
	if err != nil {
		t.Fatal(err)
	}
	kr.MachineGB1, kr.MachineGB4 = stat{1, 1, 1, 1}, stat{0.8, 0.8, 0.8, 1}
	// The anchor's service run skips all but tcp1 (common.sh prints 0 for them).
	ksvc, err := parseKernelResult("RESULT system=kernel-vxlan pod_offload=default tcp1_gbps=8.00[7.50-8.50] tcp4_gbps=0.00[0.00-0.00] " +
		"udp64_rx_pps=0[0-0] udp_loss=[] ping_avg_ms=0.000[0.000-0.000] daemon_cpu_pct(tcp1/tcp4/udp)=0/n/a/n/a ping_p50_ms=n/a ping_p99_ms=n/a via-vip=10.96.0.10")
	if err != nil {
		t.Fatal(err)
	}
	if ksvc.TCP1 != (stat{8, 7.5, 8.5, 1}) {
		t.Errorf("service RESULT tcp1 = %+v", ksvc.TCP1)
	}
	s := &summary{Reps: 2, T: 5, Machine: machineCosts{SyscallNs: 1320, WakeUs: 41.5, CrossWakeUs: 13, IdleRTTUs: 250}, KernelRes: &kr, KernelSvcRes: &ksvc, WeftReps: []weftRep{
		{Test: "tcp1", Gbps: 5, CPUPerGB: 2, MachinePerGB: 2.5}, {Test: "tcp1", Gbps: 7, CPUPerGB: 1, MachinePerGB: 1.5},
		{Test: "svc1", Gbps: 5.7, CPUPerGB: 2}, {Test: "svc1", Gbps: 6.3, CPUPerGB: 1},
		{Test: "pol1", Gbps: 5.8, CPUPerGB: 2}, {Test: "pol1", Gbps: 5.6, CPUPerGB: 2.2},
		{Test: "tcp4", Gbps: 6, CPUPerGB: 1.6, SysPerGB: 1.2, MachinePerGB: 2}, {Test: "udp", RxPPS: 50000, LossPct: 10},
		{Test: "ping", Ping: &pingFigures{N: 10, Avg: 0.1, P99: 0.3}},
		{Test: "tcp4", Err: "iperf3: boom"},
	}}
	s.compute()
	if got, want := s.ratioLine(), "e2e ratio tcp1=0.60 tcp4=0.50 udp64=0.50 rtt=2.00 svc1=0.75"; got != want {
		t.Errorf("ratio line %q, want %q", got, want)
	}
	if got, want := s.costLine(), "e2e cost tcp1=2.00 tcp4=2.50 (machine CPU s per GB, weft/kernel: weft 2.00 and 2.00)"; got != want {
		t.Errorf("cost line %q, want %q", got, want)
	}
	if s.Weft.Failed != 1 {
		t.Errorf("failed = %d, want 1", s.Weft.Failed)
	}
	if got := s.serviceLine(); !strings.HasPrefix(got, "e2e service svc1/tcp1=1.00 ") {
		t.Errorf("service line %q", got)
	}
	if got := s.policyLine(); !strings.HasPrefix(got, "e2e policy pol1/tcp1=0.95 ") {
		t.Errorf("policy line %q", got)
	}
	md := s.markdown()
	for _, want := range []string{sectionBegin, sectionEnd, "## End to end", "| TCP, 1 stream (Gbit/s) | 6.00 [5.00–7.00] | 10.00 [9.00–11.00] | 0.60 |",
		"| TCP, 1 stream via cluster IP (Gbit/s) | 6.00 [5.70–6.30] | 8.00 [7.50–8.50] | 0.75 |",
		"| TCP, 1 stream: via cluster IP / direct (weft) | 1.00 |", "ANC_SERVICE=1", "e2e.svg",
		"| TCP, 1 stream, permissive NetworkPolicy in force (Gbit/s) | 5.70 [5.60–5.80] |  |  |",
		"| TCP, 1 stream: permissive policy / none (weft) | 0.95 |",
		"| machine CPU s per GB, TCP 1 stream (pods, daemons, kernel) | 2.00 [1.50–2.50] | 1.00 | 2.00 |",
		"| machine CPU s per GB, TCP 4 streams (pods, daemons, kernel) | 2.00 | 0.80 | 2.50 |",
		"| weftd CPU s per GB, TCP 4 streams, of it in the kernel (system time) | 1.20 |  |  |",
		"a system call cost 1.32 µs, a thread wake-up 41.5 µs (13.0 µs across CPUs) and a round trip between two threads on two CPUs idle for 10ms before it 250 µs"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	svg := filepath.Join(t.TempDir(), "e2e.svg")
	if err := writeChart(svg, s); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(svg)
	if err != nil || !strings.Contains(string(b), "<svg") || !strings.Contains(string(b), "TCP throughput") {
		t.Errorf("chart: %v, %d bytes", err, len(b))
	}
	// Without a kernel run every ratio is n/a, and nothing panics.
	s.KernelRes, s.KernelSvcRes = nil, nil
	if got := s.costLine(); !strings.HasPrefix(got, "e2e cost tcp1=n/a tcp4=n/a ") {
		t.Errorf("cost line without kernel: %q", got)
	}
	if got := s.ratioLine(); got != "e2e ratio tcp1=n/a tcp4=n/a udp64=n/a rtt=n/a svc1=n/a" {
		t.Errorf("ratio line without kernel: %q", got)
	}
	if err := writeChart(svg, s); err != nil {
		t.Errorf("chart without kernel: %v", err)
	}
}

// TestMeasureMachine runs the machine probe: every cost comes out positive
// and below a bound no working machine reaches (a second per call).
func TestMeasureMachine(t *testing.T) {
	m, err := measureMachine()
	if err != nil {
		t.Fatal(err)
	}
	cross := m.CrossWakeUs > 0 && m.IdleRTTUs > 0 || runtime.NumCPU() == 1
	if !(m.SyscallNs > 0 && m.SyscallNs < 1e9) || !(m.WakeUs > 0 && m.WakeUs < 1e6) || !cross || m.CrossWakeUs >= 1e6 || m.IdleRTTUs >= 1e6 {
		t.Errorf("machine costs %+v", m)
	}
	t.Logf("machine costs %+v", m)
}

// TestServiceYAML decodes the benchmark's Service and EndpointSlice strictly
// into the Kubernetes types weftd stores, and checks they say what the row
// measures: the anchor's VIP and port, one ready endpoint at pod 2.
func TestServiceYAML(t *testing.T) {
	docs := strings.Split(serviceYAML("10.244.2.3"), "\n---\n")
	if len(docs) != 2 {
		t.Fatalf("%d documents, want 2", len(docs))
	}
	var svc corev1.Service
	var es discoveryv1.EndpointSlice
	if err := yaml.UnmarshalStrict([]byte(docs[0]), &svc); err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict([]byte(docs[1]), &es); err != nil {
		t.Fatal(err)
	}
	if svc.Kind != "Service" || svc.Spec.ClusterIP != serviceVIP || len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 5201 ||
		svc.Spec.Ports[0].Protocol != corev1.ProtocolTCP || svc.Spec.Ports[0].TargetPort.IntValue() != 5201 {
		t.Errorf("service = %+v", svc)
	}
	if es.Kind != "EndpointSlice" || es.Labels[discoveryv1.LabelServiceName] != svc.Name || es.Namespace != svc.Namespace ||
		len(es.Endpoints) != 1 || es.Endpoints[0].Addresses[0] != "10.244.2.3" ||
		es.Endpoints[0].Conditions.Ready == nil || !*es.Endpoints[0].Conditions.Ready ||
		len(es.Ports) != 1 || *es.Ports[0].Port != 5201 || *es.Ports[0].Name != svc.Spec.Ports[0].Name {
		t.Errorf("endpoint slice = %+v", es)
	}
}

// TestPolicyYAML decodes the pol1 row's policy as weftd does (strictly,
// into the Kubernetes type), and compiles it with two pods of its
// namespace: it must isolate both (so the policy stage runs) and admit
// every flow between them and to the outside, both ways.
func TestPolicyYAML(t *testing.T) {
	o, err := objects.DecodeOne([]byte(policyYAML()))
	if err != nil {
		t.Fatal(err)
	}
	np := o.NetworkPolicy
	if np == nil || np.Namespace != policyNS || np.Name != policyName {
		t.Fatalf("decoded %+v", o)
	}
	if err := policy.Validate(np); err != nil {
		t.Fatal(err)
	}
	p1, p2 := netip.MustParseAddr("10.244.0.3"), netip.MustParseAddr("10.244.1.3")
	s := policy.Compile(policy.Input{
		Namespaces: []policy.Namespace{{Name: policyNS}},
		Pods: []policy.Pod{
			{Namespace: policyNS, Name: "n1-p1", Labels: map[string]string{"app": "sim", "sim-pod": "n1-p1"}, IP: p1},
			{Namespace: policyNS, Name: "n2-p1", Labels: map[string]string{"app": "sim", "sim-pod": "n2-p1"}, IP: p2},
		},
		Policies: []*networkingv1.NetworkPolicy{np},
	}, 1)
	if !s.Active() || len(s.Policies()) != 1 || len(s.Policies()[0].Selects) != 2 || !s.Policies()[0].Ingress || !s.Policies()[0].Egress {
		t.Fatalf("policy does not isolate both pods both ways: %+v", s.Policies())
	}
	for _, f := range []policy.Flow{
		{Src: p1.As4(), Dst: p2.As4(), Proto: policy.ProtoTCP, DstPort: 5201},
		{Src: p2.As4(), Dst: p1.As4(), Proto: policy.ProtoUDP, DstPort: 53},
		{Src: p1.As4(), Dst: [4]byte{192, 0, 2, 1}, Proto: 1},
		{Src: [4]byte{192, 0, 2, 1}, Dst: p2.As4(), Proto: policy.ProtoTCP, DstPort: 80},
	} {
		if d := s.Decide(f, policy.CheckBoth); !d.Allowed {
			t.Errorf("%+v denied: %s", f, s.Explain(f, d))
		}
	}
}
