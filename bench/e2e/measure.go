package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"
)

// netnsDir is where `ip netns` (and the sim) keep their namespaces.
const netnsDir = "/var/run/netns"

// inNetns returns a command that runs argv inside the named namespace.
// nsenter --net only switches the network namespace (unlike `ip netns exec`,
// which also remounts /sys), and execs argv, so the PID is argv's.
func inNetns(ctx context.Context, netns string, argv ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + netnsDir + "/" + netns, "--"}, argv...)...)
}

// iperfReport is the part of `iperf3 -J` output the benchmark reads.
type iperfReport struct {
	End struct {
		SumSent     iperfSum `json:"sum_sent"`
		SumReceived iperfSum `json:"sum_received"`
		Sum         iperfSum `json:"sum"` // UDP in iperf3 < 3.13 (no sum_received)
	} `json:"end"`
	Error string `json:"error"`
}

type iperfSum struct {
	Seconds       float64 `json:"seconds"`
	Bytes         float64 `json:"bytes"`
	BitsPerSecond float64 `json:"bits_per_second"`
	Retransmits   int     `json:"retransmits"`
	Packets       float64 `json:"packets"`
	LostPackets   float64 `json:"lost_packets"`
	LostPercent   float64 `json:"lost_percent"`
}

// tcpFigures are one TCP iperf3 run's results.
type tcpFigures struct {
	Gbps        float64 // received
	Bytes       float64 // received
	Retransmits int
}

// parseIperfTCP reads a TCP `iperf3 -J` report.
func parseIperfTCP(b []byte) (tcpFigures, error) {
	var r iperfReport
	if err := json.Unmarshal(b, &r); err != nil {
		return tcpFigures{}, fmt.Errorf("iperf3 json: %w", err)
	}
	if r.Error != "" {
		return tcpFigures{}, fmt.Errorf("iperf3: %s", r.Error)
	}
	s := r.End.SumReceived
	if s.Seconds <= 0 || s.Bytes <= 0 {
		return tcpFigures{}, errors.New("iperf3 json: no received bytes")
	}
	return tcpFigures{Gbps: s.BitsPerSecond / 1e9, Bytes: s.Bytes, Retransmits: r.End.SumSent.Retransmits}, nil
}

// udpFigures are one UDP iperf3 run's results.
type udpFigures struct {
	RxPPS   float64 // datagrams received per second
	TxPPS   float64 // datagrams sent per second
	LossPct float64
}

// parseIperfUDP reads a UDP `iperf3 -J` report: received datagrams per
// second are (packets - lost) / seconds of the receiver's summary, as the
// anchors compute them.
func parseIperfUDP(b []byte) (udpFigures, error) {
	var r iperfReport
	if err := json.Unmarshal(b, &r); err != nil {
		return udpFigures{}, fmt.Errorf("iperf3 json: %w", err)
	}
	if r.Error != "" {
		return udpFigures{}, fmt.Errorf("iperf3: %s", r.Error)
	}
	rx, tx := r.End.SumReceived, r.End.SumSent
	if rx.Packets == 0 && r.End.Sum.Packets > 0 {
		rx, tx = r.End.Sum, r.End.Sum
	}
	if rx.Seconds <= 0 {
		return udpFigures{}, errors.New("iperf3 json: no receiver summary")
	}
	f := udpFigures{RxPPS: (rx.Packets - rx.LostPackets) / rx.Seconds, LossPct: rx.LostPercent}
	if tx.Seconds > 0 {
		f.TxPPS = tx.Packets / tx.Seconds
	}
	return f, nil
}

// pingFigures are one ping run's round-trip times in milliseconds.
type pingFigures struct {
	N                  int
	Avg, P50, P99, Max float64
}

// parsePing reads the per-reply "time=X ms" lines of ping's output. The
// percentiles pick the sorted sample at index int(n*q) (1-based, at least
// the first), as the anchors' awk does, so the two are comparable.
func parsePing(b []byte) (pingFigures, error) {
	var rtts []float64
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		_, after, ok := strings.Cut(sc.Text(), "time=")
		if !ok {
			continue
		}
		num, _, _ := strings.Cut(after, " ")
		v, err := strconv.ParseFloat(num, 64)
		if err != nil {
			continue
		}
		rtts = append(rtts, v)
	}
	if len(rtts) == 0 {
		return pingFigures{}, errors.New("ping: no replies")
	}
	slices.Sort(rtts)
	sum := 0.0
	for _, v := range rtts {
		sum += v
	}
	at := func(q float64) float64 {
		i := int(float64(len(rtts)) * q)
		if i < 1 {
			i = 1
		}
		return rtts[i-1]
	}
	return pingFigures{N: len(rtts), Avg: sum / float64(len(rtts)), P50: at(0.5), P99: at(0.99), Max: rtts[len(rtts)-1]}, nil
}

// stat is the median of some repetitions with their range.
type stat struct {
	Median, Min, Max float64
	N                int
}

func statOf(v []float64) stat {
	if len(v) == 0 {
		return stat{Median: math.NaN(), Min: math.NaN(), Max: math.NaN()}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return stat{Median: m, Min: s[0], Max: s[len(s)-1], N: len(s)}
}

// Valid reports whether the stat has at least one sample.
func (s stat) Valid() bool { return s.N > 0 && !math.IsNaN(s.Median) }

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times: 100 on every
// Linux architecture that matters here; getconf confirms it.
var clockTicks = func() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if v, err := strconv.Atoi(strings.TrimSpace(string(out))); err == nil && v > 0 {
			return float64(v)
		}
	}
	return 100
}()

// cpuSeconds is the user and system time of the given processes (all
// their threads), in seconds. A process that is gone counts 0, so compare
// deltas over PIDs that were alive across the interval.
func cpuSeconds(pids []int) (user, sys float64) {
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			continue
		}
		u, s := procStatTicks(b)
		user, sys = user+u, sys+s
	}
	return user / clockTicks, sys / clockTicks
}

// procStatTicks returns fields 14 (utime) and 15 (stime) of /proc/PID/stat.
// The command name (field 2) may hold spaces, so count from its ')'.
func procStatTicks(b []byte) (utime, stime float64) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime is field 14 -> f[11], stime f[12].
	if len(f) < 13 {
		return 0, 0
	}
	utime, _ = strconv.ParseFloat(f[11], 64)
	stime, _ = strconv.ParseFloat(f[12], 64)
	return utime, stime
}

// busyTicks reads the machine-wide busy and total jiffies from /proc/stat
// (busy = user+nice+system+irq+softirq+steal, total adds idle+iowait).
func busyTicks() (busy, total float64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0
	}
	v := make([]float64, 9)
	for i := 1; i < 9; i++ {
		v[i], _ = strconv.ParseFloat(f[i], 64)
	}
	busy = v[1] + v[2] + v[3] + v[6] + v[7] + v[8]
	return busy, busy + v[4] + v[5]
}

// machineCPUPerGB is what moving a GB cost the whole machine (the pods,
// the daemons, the kernel's softirqs: everything that ran) in CPU
// seconds: its busy share during the run, busyPct of cpus CPUs, over the
// throughput in Gbit/s. The anchor logs the same two figures per run, so
// weft and the kernel are costed the same way. Where both keep the CPUs
// busy, the kernel's figure over weft's bounds weft's throughput ratio.
// NaN when the throughput is not positive.
func machineCPUPerGB(busyPct float64, cpus int, gbps float64) float64 {
	if gbps <= 0 || cpus <= 0 {
		return math.NaN()
	}
	return busyPct / 100 * float64(cpus) / (gbps / 8)
}

// busyPct is the machine's busy share in percent between two busyTicks.
func busyPct(b0, t0, b1, t1 float64) float64 {
	if t1 <= t0 {
		return 0
	}
	return (b1 - b0) / (t1 - t0) * 100
}

// waitQuiet waits until the whole machine was at most pct % busy for one
// second, or maxWait passed. It returns the last second's busy % and how
// long it waited: the same rule as the anchors' anc_wait_quiet, so the two
// systems are measured under the same conditions.
func waitQuiet(ctx context.Context, pct float64, maxWait time.Duration) (float64, time.Duration) {
	start := time.Now()
	for {
		b0, t0 := busyTicks()
		select {
		case <-ctx.Done():
			return 0, time.Since(start)
		case <-time.After(time.Second):
		}
		b1, t1 := busyTicks()
		bg := busyPct(b0, t0, b1, t1)
		if bg <= pct || time.Since(start) >= maxWait {
			return bg, time.Since(start).Truncate(time.Second)
		}
	}
}

// udpRcvbufErrors is UdpRcvbufErrors in a namespace: datagrams the
// receiving socket (the iperf3 server) had no room for.
func udpRcvbufErrors(ctx context.Context, netns string) int64 {
	out, err := inNetns(ctx, netns, "nstat", "-asz", "UdpRcvbufErrors").Output()
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && f[0] == "UdpRcvbufErrors" {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v
		}
	}
	return 0
}
