package overlay

import (
	"net/netip"
	"testing"

	"github.com/weftnet/weft/internal/frametest"
)

// The inner frames and addresses of the tests: frametest's.
type flow = frametest.Flow

var (
	defaultFlow  = frametest.DefaultFlow
	withHeadroom = frametest.WithHeadroom

	macA, macB, macU, macV = frametest.MACA, frametest.MACB, frametest.MACU, frametest.MACV
	underA, underB         = frametest.UnderA, frametest.UnderB
)

// testPeers returns a PeerTable holding peers at underA and underB.
func testPeers(t testing.TB, vni uint32) *PeerTable {
	t.Helper()
	var pt PeerTable
	err := pt.Set([]Peer{
		{Name: "node-a", Underlay: netip.AddrFrom4(underA), RouterMAC: macU, Subnet: netip.MustParsePrefix("10.244.1.0/24"), VNI: vni},
		{Name: "node-b", Underlay: netip.AddrFrom4(underB), RouterMAC: macV, Subnet: netip.MustParsePrefix("10.244.2.0/24"), VNI: vni},
	})
	if err != nil {
		t.Fatal(err)
	}
	return &pt
}
