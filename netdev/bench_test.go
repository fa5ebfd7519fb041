package netdev

import (
	"fmt"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/testenv"
)

// BenchmarkTapEchoRoundTrip writes a batch of ICMP echo requests into a TAP
// and reads the pod kernel's replies: frames/s is replies read per second,
// including the kernel's own ICMP work.
func BenchmarkTapEchoRoundTrip(b *testing.B) {
	testenv.RequireRoot(b)
	for _, vnet := range []bool{false, true} {
		for _, batch := range []int{1, 32} {
			b.Run(fmt.Sprintf("vnet=%v/batch=%d", vnet, batch), func(b *testing.B) {
				cfg := podTapConfig(newTestNetns(b))
				cfg.VnetHdr = vnet
				tap := createTestTap(b, cfg)
				bufs, sizes := newBatch(64, 2048)
				checkPing(b, tap, bufs, sizes, 0, 1)
				reqs := make([][]byte, batch)
				for i := range reqs {
					reqs[i] = echoRequest(make([]byte, 256), tap.MAC(), gwIP, podIP, 0x7744, uint16(i), 56)
				}
				tap.SetReadDeadline(time.Now().Add(time.Minute))
				b.ReportAllocs()
				b.SetBytes(int64(batch * len(reqs[0])))
				frames := 0
				for b.Loop() {
					if _, err := tap.Write(reqs, 0); err != nil {
						b.Fatal(err)
					}
					for got := 0; got < batch; {
						n, err := tap.Read(bufs, sizes, 0)
						if err != nil {
							b.Fatal(err)
						}
						got += n
					}
					frames += batch
				}
				b.ReportMetric(float64(frames)/b.Elapsed().Seconds(), "frames/s")
			})
		}
	}
}
