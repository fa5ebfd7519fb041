package node

import (
	"crypto/sha256"
	"net/netip"

	"github.com/weftnet/weft/packet"
)

// RouterMAC derives the node's router MAC from its name: stable across
// restarts (peers and kernel VXLAN neighbours keep pointing at it) and
// locally administered unicast (first octet x2: bit 1 set, bit 0 clear).
func RouterMAC(nodeName string) packet.MAC {
	h := sha256.Sum256([]byte("weft-router/" + nodeName))
	return packet.MAC{0x0a, 0xfe, h[0], h[1], h[2], h[3]}
}

// PodMAC derives a pod port's MAC from its address, as the Kubernetes
// bridge plugins do (0a:58:<IPv4>): unique per address within the cluster,
// stable when a pod is re-attached with the same address, and readable.
func PodMAC(addr netip.Addr) packet.MAC {
	a := addr.As4()
	return packet.MAC{0x0a, 0x58, a[0], a[1], a[2], a[3]}
}

// HostMAC is the MAC of the node's own port (weft0).
func HostMAC(nodeName string) packet.MAC {
	m := RouterMAC(nodeName)
	m[1] = 0xfd
	return m
}
