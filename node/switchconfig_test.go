package node

import (
	"net/netip"
	"testing"

	vswitch "github.com/weftnet/weft/switch"
)

// TestSwitchConfigFDBSize: the node's FDBSize (weftd --fdb-size) reaches
// the switch's learning table; zero leaves the switch's default.
func TestSwitchConfigFDBSize(t *testing.T) {
	subnet := netip.MustParsePrefix("10.244.1.0/24")
	for _, tc := range []struct{ set, want int }{{0, vswitch.DefaultFDBSize}, {1, 1}, {100000, 100000}} {
		n := &Node{cfg: Config{FDBSize: tc.set}, mtu: 1450, routerMAC: RouterMAC("n1")}
		sw, err := vswitch.New(n.switchConfig(subnet))
		if err != nil {
			t.Fatalf("FDBSize %d: %v", tc.set, err)
		}
		if got := sw.Config().FDBSize; got != tc.want {
			t.Errorf("FDBSize %d: the switch's table holds %d, want %d", tc.set, got, tc.want)
		}
	}
	n := &Node{cfg: Config{FDBSize: vswitch.MaxFDBSize + 1}, mtu: 1450, routerMAC: RouterMAC("n1")}
	if _, err := vswitch.New(n.switchConfig(subnet)); err == nil {
		t.Errorf("FDBSize %d: the switch took it", vswitch.MaxFDBSize+1)
	}
}
