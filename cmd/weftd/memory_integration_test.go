package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/testenv"
	"github.com/weftnet/weft/sim"
)

// TestPodMemoryRSS is issue 16's memory target on a real weftd: resident
// memory with 1 and 110 pods attached (real TAPs in their own namespaces,
// offloads on as by default), after every pod pinged its neighbour (3
// requests) and ten pairs moved 4 MiB over TCP each (TSO super-frames
// through the transmitters' pooled buffers), and after two housekeeping
// ticks, which free the pooled buffers no worker took. Target: 110 pods
// attached <= 150 MB RSS.
//
//	go test ./cmd/weftd -run TestPodMemoryRSS -v
func TestPodMemoryRSS(t *testing.T) {
	const pods, target = 110, 150_000_000
	if testing.Short() {
		t.Skip("attaches 110 pods (about a minute); not in -short")
	}
	c := upCluster(t, sim.Options{Name: testenv.UniqueName("wbm")}, 1, 0)
	n := c.Nodes[0]
	cl := nodeClient(t, n)
	rss0 := rssOf(t, n.PID)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	add := func(k int) {
		for len(n.Pods) < k {
			if _, err := c.AddPod(ctx, n); err != nil {
				t.Fatalf("pod %d: %v", len(n.Pods)+1, err)
			}
		}
	}
	add(1)
	rss1 := rssOf(t, n.PID)
	add(pods)
	time.Sleep(time.Second)
	rssIdle := rssOf(t, n.PID)

	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	var mu sync.Mutex
	lost := 0
	for i, p := range n.Pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			next := n.Pods[(i+1)%len(n.Pods)]
			pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			out, _ := sim.Command(pctx, p.Netns, "ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", next.IP().String()).CombinedOutput()
			// Traffic is the point, not loss on a loaded machine: one
			// reply of three shows the pod's path works.
			if !strings.Contains(string(out), " received") || strings.Contains(string(out), " 0 received") {
				mu.Lock()
				lost++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if lost > 0 {
		t.Errorf("%d of %d pods got no echo reply from their neighbour", lost, pods)
	}
	const bulk = 4 << 20
	pairs := make([]*tcpPair, 10)
	for i := range pairs {
		a, b := n.Pods[2*i], n.Pods[2*i+1]
		pairs[i] = connectTCP(t, a.Netns, b.Netns, b.IP())
	}
	for i, pr := range pairs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pr.client.SetDeadline(time.Now().Add(time.Minute))
			pr.server.SetDeadline(time.Now().Add(time.Minute))
			go pr.client.Write(make([]byte, bulk))
			if got, err := io.CopyN(io.Discard, pr.server, bulk); err != nil {
				t.Errorf("pair %d: %d of %d bytes: %v", i, got, bulk, err)
			}
		}()
	}
	wg.Wait()
	rssBusy := rssOf(t, n.PID)
	busyPools := counter(t, counters(t, cl), "buffers.bytes")
	for _, pr := range pairs {
		pr.client.Close()
		pr.server.Close()
	}
	time.Sleep(11 * time.Second) // two housekeeping ticks (5 s)
	rssTrim := rssOf(t, n.PID)
	trimPools := counter(t, counters(t, cl), "buffers.bytes")

	t.Logf("weftd RSS: no pods %s; 1 pod %s; %d pods idle %s (%s/pod over none); after traffic %s (pooled buffers %s); two ticks later %s (pooled %s)",
		mb(rss0), mb(rss1), pods, mb(rssIdle), mb((rssIdle-rss0)/pods), mb(rssBusy), mb(int(busyPools)), mb(rssTrim), mb(int(trimPools)))
	if rssIdle > target || rssBusy > target {
		t.Errorf("%d pods: RSS %s idle, %s after traffic; want <= %s", pods, mb(rssIdle), mb(rssBusy), mb(target))
	}
	if busyPools == 0 {
		t.Errorf("no pooled buffers after traffic: the traffic did not go through the transmitters?")
	}
}

func mb(b int) string { return fmt.Sprintf("%.1f MB", float64(b)/1e6) }

// rssOf is the resident set size of process pid (VmRSS), in bytes.
func rssOf(t *testing.T, pid int) int {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			if err != nil {
				t.Fatalf("VmRSS %q: %v", rest, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}
