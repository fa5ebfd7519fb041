package node

import (
	"testing"

	"github.com/weftnet/weft/overlay"
	"github.com/weftnet/weft/packet"
)

// TestGSOMaxSegs: a pod's super-frame fits one UDP GSO message.
func TestGSOMaxSegs(t *testing.T) {
	for _, tc := range []struct{ mtu, want int }{
		{1450, 44}, // 44 x 1472 = 64,768 <= 65,507; 45 would not fit
		{1500, 43},
		{8950, 7},
		{576, 64}, // capped at the datagrams one message may carry
		{0, 43},   // the kernel's default MTU
	} {
		got := gsoMaxSegs(tc.mtu)
		if got != tc.want {
			t.Errorf("gsoMaxSegs(%d) = %d, want %d", tc.mtu, got, tc.want)
		}
		mtu := tc.mtu
		if mtu == 0 {
			mtu = 1500
		}
		if bytes := got * (mtu + overlay.HeaderLen + packet.EthHdrLen); bytes > overlay.MaxGSOBytes {
			t.Errorf("MTU %d: %d segments make %d bytes of UDP payload, more than one message holds", tc.mtu, got, bytes)
		}
	}
}
