package kubecp

import (
	"fmt"
	"net/netip"

	"github.com/weftnet/weft/netdev"
)

// AttachLink is the name of the veth end Attach puts into the joined
// namespace.
const AttachLink = "kubeapi"

// Attach joins the namespace at nsPath to the control plane with a veth
// pair (AttachLink in nsPath, a /30 out of 172.30.128.0/17) and a route
// there to APIAddr, so processes in it reach the API server at URL with
// Kubeconfig, as a node's kubelet and weftd reach a real cluster's. Nothing
// else is routed: the joined namespace's own routes are untouched. The
// pair goes away with the control plane's namespace.
func (cp *ControlPlane) Attach(nsPath string) error {
	n := cp.Attached
	if n >= 1<<(32-attachNet.Bits()-2) {
		return fmt.Errorf("attach %s: all %d links used", nsPath, n)
	}
	base := attachNet.Addr().As4()
	off := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3]) + uint32(n)*4
	addr := func(i uint32) netip.Addr {
		v := off + i
		return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	}
	cpEnd := netdev.VethEnd{Name: fmt.Sprintf("att%d", n), NetnsPath: cp.NetnsPath(), Addr: netip.PrefixFrom(addr(1), 30)}
	peer := netdev.VethEnd{Name: AttachLink, NetnsPath: nsPath, Addr: netip.PrefixFrom(addr(2), 30)}
	if err := netdev.NewVeth(cpEnd, peer); err != nil {
		return fmt.Errorf("attach %s: %w", nsPath, err)
	}
	cp.Attached++
	if err := netdev.AddRoute(nsPath, AttachLink, netip.PrefixFrom(APIAddr, 32), addr(1)); err != nil {
		return fmt.Errorf("attach %s: route to %s: %w", nsPath, APIAddr, err)
	}
	return nil
}
