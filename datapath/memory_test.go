package datapath

import (
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/netdev"
	"github.com/weftnet/weft/packet"
	vswitch "github.com/weftnet/weft/switch"
)

// TestPodMemory measures what a pod port costs the data path's heap (its
// Port, its transmitter with the goroutine that runs it, its switch port)
// with 1 and 110 pods attached over fake TAPs (virtio header, TSO/USO, as
// weftd opens them): idle, right after each pod sent a 64 KiB super-frame
// to a peer and a frame to its neighbour, and after the housekeeping ticks
// that trim the buffer pools. Issue 16's target is 0.3 MiB per idle pod.
//
//	go test ./datapath -run TestPodMemory -v
func TestPodMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("measures the heap with 110 ports; not in -short")
	}
	for _, pods := range []int{1, 110} {
		m := measurePods(t, pods)
		t.Logf("%3d pods: idle %s/pod heap + %s/pod stack; after traffic %s/pod (pools %s); after trim %s/pod",
			pods, mib(m.idle), mib(m.stack), mib(m.busy), mib(float64(m.pooled)), mib(m.trimmed))
		if pods > 1 && m.idle > 0.3*(1<<20) {
			t.Errorf("%d pods: an idle pod costs %s of heap, want <= 0.3 MiB", pods, mib(m.idle))
		}
		if pods > 1 && m.trimmed > m.idle+16<<10 {
			t.Errorf("%d pods: after traffic and trims a pod costs %s, idle %s: buffers stayed", pods, mib(m.trimmed), mib(m.idle))
		}
	}
}

func mib(b float64) string { return fmt.Sprintf("%.3f MiB", b/(1<<20)) }

// podMemory is what measurePods found, in bytes per pod unless named.
type podMemory struct {
	idle, stack, busy, trimmed float64
	pooled                     int // bytes the pools held after the traffic
}

func measurePods(t *testing.T, pods int) podMemory {
	tso := modes[2].offloads
	sw, err := vswitch.New(vswitch.Config{RouterMAC: routerMAC, Subnet: netip.MustParsePrefix("10.244.1.0/24"),
		Gateway: netip.MustParseAddr("10.244.1.1"), MTU: testMTU})
	must(t, err)
	must(t, sw.AddPort(vswitch.PortConfig{ID: overlayID, Kind: vswitch.PortOverlay}))
	r := newRig(t, tso, true) // for its peer table and decapsulator
	must(t, sw.SetRoutes([]vswitch.Route{{Prefix: netip.MustParsePrefix("10.244.2.0/24"), Kind: vswitch.RoutePeer, Peer: underB, PeerMAC: peerMAC}}))
	out := &sink{discard: true}
	dp := New(Config{Switch: sw, Decap: r.decap, Peers: r.peers, VNI: testVNI, Port: 4789, OverlayPort: overlayID, Coalesce: true})

	// The pods' devices are made first, their slots as big as the
	// largest frame: they are the test's, not the data path's (a TAP's
	// queue lives in the kernel).
	dpEnds, podEnds := make([]*netdev.Fake, pods), make([]*netdev.Fake, pods)
	for i := range pods {
		dpEnds[i], podEnds[i] = netdev.NewPipeSize("dp", "pod", 2, SuperBufSize, SuperReadBatch)
		dpEnds[i].SetVnet(tso)
		podEnds[i].SetVnet(tso)
	}
	podMAC := func(i int) packet.MAC { return packet.MAC{0x0a, 0x58, 0x0a, 0xf4, byte(i >> 8), byte(i)} }
	podIP := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 244, 1, byte(10 + i)}) }

	before := heapAfterGC()
	var wg sync.WaitGroup
	for i := range pods {
		id := vswitch.PortID(10 + i)
		must(t, sw.AddPort(vswitch.PortConfig{ID: id, Kind: vswitch.PortPod, MAC: podMAC(i), IPv4: podIP(i)}))
		p := &Port{ID: id, Dev: dpEnds[i]}
		tx := dp.NewTransmitter(p, dpEnds[i], out)
		dp.SetPort(p)
		wg.Add(1)
		go func() {
			defer wg.Done()
			tx.Run()
		}()
	}
	time.Sleep(50 * time.Millisecond) // every transmitter waiting
	idle := heapAfterGC()

	// Traffic: each pod sends a super-frame to the remote pod and a frame
	// to the next pod, and reads what it got.
	for i := range pods {
		f, _, h := superFrameFrom(t, 60000, 1, 1398, podMAC(i), podIP(i), remoteIP)
		must(t, writeVnet(podEnds[i], f, h))
		next := (i + 1) % pods
		_, err := podEnds[i].Write([][]byte{udpFrame(podMAC(i), routerMAC, podIP(i), podIP(next), 100, 64)}, 0)
		must(t, err)
	}
	want := pods * (packet.TCPSegments(60000, 1398))
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		out.mu.Lock()
		sent := out.count
		out.mu.Unlock()
		if sent >= want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d pods: %d of %d segments reached the underlay; drops %v", pods, sent, want, dp.DropCounts())
		}
	}
	for _, e := range podEnds {
		readAll(t, e)
	}
	busy := heapAfterGC()
	pooled := dp.BufferStats().Bytes
	dp.TrimBuffers()
	dp.TrimBuffers()
	trimmed := heapAfterGC()

	for i := range pods {
		dpEnds[i].Close()
	}
	wg.Wait()
	per := func(m runtime.MemStats) float64 { return float64(m.HeapAlloc-before.HeapAlloc) / float64(pods) }
	return podMemory{
		idle:    per(idle),
		stack:   float64(idle.StackInuse-before.StackInuse) / float64(pods),
		busy:    per(busy),
		trimmed: per(trimmed),
		pooled:  pooled,
	}
}

func heapAfterGC() runtime.MemStats {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m
}
