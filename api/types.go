package api

import (
	"fmt"
	"net/netip"
	"path"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/weftnet/weft/packet"
)

// Status is a node's identity and health (GET /v1/status).
type Status struct {
	Node          string         `json:"node"`
	Version       string         `json:"version"`
	Underlay      netip.Addr     `json:"underlay"`                 // the node's underlay IPv4 address
	UnderlayIface string         `json:"underlay_iface,omitempty"` // the interface holding it
	Subnet        netip.Prefix   `json:"subnet"`                   // this node's pod subnet
	Gateway       netip.Addr     `json:"gateway"`                  // .1 of Subnet: the virtual router
	HostAddr      netip.Addr     `json:"host_addr"`                // .2 of Subnet: the weft0 host port
	RouterMAC     packet.MAC     `json:"router_mac"`
	VNI           uint32         `json:"vni"`
	Port          uint16         `json:"port"` // VXLAN UDP port
	MTU           int            `json:"mtu"`  // pod MTU
	ClusterCIDR   netip.Prefix   `json:"cluster_cidr"`
	StartedAt     time.Time      `json:"started_at"`
	Uptime        Duration       `json:"uptime"`
	Registry      RegistryStatus `json:"registry"`
	Ports         int            `json:"ports"` // attached pod ports, the host port excluded
	Peers         int            `json:"peers"` // remote nodes with a live lease
	// Offload names the kernel offloads in use after probing, e.g.
	// "tap-tso,udp-gso,udp-gro", or "off".
	Offload string `json:"offload"`
	// RxWorkers is how many sockets (and workers) receive VXLAN.
	RxWorkers int `json:"rx_workers,omitempty"`
	// Egress is the way out and in through the node's stack (nil from a
	// weftd that predates it).
	Egress *Egress `json:"egress,omitempty"`
}

// Registry states.
const (
	RegistryOK       = "ok"
	RegistryDegraded = "degraded"
)

// RegistryStatus says whether the node can reach the cluster registry.
type RegistryStatus struct {
	Backend   string    `json:"backend"` // "file" or "etcd"
	State     string    `json:"state"`   // RegistryOK or RegistryDegraded
	Since     time.Time `json:"since"`   // when State last changed
	LastError string    `json:"last_error,omitempty"`
	// NotPeers are nodes the registry knows that are not peers, and why
	// (the kube backend: a Node without a podCIDR or weft's annotations).
	NotPeers []NotPeer `json:"not_peers,omitempty"`
}

// NotPeer is a node that is not in the peer table, and why.
type NotPeer struct {
	Node string `json:"node"`
	Why  string `json:"why"`
}

// Port is one attached pod interface (GET /v1/ports).
type Port struct {
	PodID        string       `json:"pod_id"`
	PodNamespace string       `json:"pod_namespace,omitempty"`
	PodName      string       `json:"pod_name,omitempty"`
	Owner        string       `json:"owner,omitempty"` // AttachRequest.Owner
	Netns        string       `json:"netns"`
	IfName       string       `json:"ifname"`   // name inside the pod
	TapName      string       `json:"tap_name"` // name of the TAP device weftd holds
	IP           netip.Addr   `json:"ip"`
	Address      netip.Prefix `json:"address"` // IP with the subnet's mask
	MAC          packet.MAC   `json:"mac"`
	Gateway      netip.Addr   `json:"gateway"`
	MTU          int          `json:"mtu"`
	PortID       int          `json:"port_id"`   // the switch's port number
	RxFrames     uint64       `json:"rx_frames"` // received from the pod
	TxFrames     uint64       `json:"tx_frames"` // sent to the pod
	RxBytes      uint64       `json:"rx_bytes"`
	TxBytes      uint64       `json:"tx_bytes"`
	Since        time.Time    `json:"since"`            // attach time
	Queues       int          `json:"queues,omitempty"` // the TAP's queues, each with a worker (offload mode; 0 for a plain TAP)

	// PortMappings are the pod's hostPorts.
	PortMappings []PortMapping `json:"port_mappings,omitempty"`
}

// DefaultIfName is the pod interface name when a request gives none.
const DefaultIfName = "eth0"

// AttachRequest asks weftd to give a pod an interface (POST /v1/ports).
// Attaching the same PodID and IfName again returns the existing port.
type AttachRequest struct {
	PodID        string `json:"pod_id"`
	Netns        string `json:"netns"`            // path of the pod's network namespace
	IfName       string `json:"ifname,omitempty"` // default DefaultIfName
	PodNamespace string `json:"pod_namespace,omitempty"`
	PodName      string `json:"pod_name,omitempty"`
	// PodUID, Labels and ContainerPorts are the pod's metadata, published
	// in the registry so every node can resolve Service selectors and
	// policy peers (see PodMeta).
	PodMeta
	// Owner names who attached the port ("cni" for weft-cni; empty for a
	// person with `weft attach`), so that a runtime's garbage collection
	// only ever removes the ports it made.
	Owner string `json:"owner,omitempty"`
	// PortMappings are hostPorts for the pod (CNI's portMappings). A
	// mapping another pod holds on that host address and protocol fails
	// the attach with ErrConflict.
	PortMappings []PortMapping `json:"port_mappings,omitempty"`
}

// OwnerCNI marks ports attached by the CNI plugin.
const OwnerCNI = "cni"

// Normalize fills defaults and checks the fields; the error wraps
// ErrBadRequest and names the field. The server calls it before the
// Service sees the request, so a Service may rely on IfName being set.
func (r *AttachRequest) Normalize() error {
	if r.IfName == "" {
		r.IfName = DefaultIfName
	}
	if err := checkPodID(r.PodID); err != nil {
		return err
	}
	if err := checkNetnsPath(r.Netns); err != nil {
		return err
	}
	if err := r.PodMeta.check(); err != nil {
		return err
	}
	if err := normalizePortMappings(r.PortMappings); err != nil {
		return err
	}
	return checkIfName(r.IfName)
}

// AttachResponse describes the interface weftd set up in the pod.
type AttachResponse struct {
	PodID   string       `json:"pod_id"`
	IfName  string       `json:"ifname"`
	Netns   string       `json:"netns"`
	TapName string       `json:"tap_name"`
	IP      netip.Addr   `json:"ip"`      // plain form, 10.244.1.5
	Address netip.Prefix `json:"address"` // CIDR form, 10.244.1.5/24
	MAC     packet.MAC   `json:"mac"`
	Gateway netip.Addr   `json:"gateway"`
	MTU     int          `json:"mtu"`
}

// DetachRequest removes a pod interface (DELETE /v1/ports/{pod_id}).
type DetachRequest struct {
	PodID  string `json:"pod_id"`
	IfName string `json:"ifname,omitempty"` // default DefaultIfName
}

// Normalize fills defaults and checks the fields, as AttachRequest.Normalize.
func (r *DetachRequest) Normalize() error {
	if r.IfName == "" {
		r.IfName = DefaultIfName
	}
	if err := checkPodID(r.PodID); err != nil {
		return err
	}
	return checkIfName(r.IfName)
}

func checkPodID(id string) error {
	switch {
	case id == "":
		return BadRequest("pod_id", "required")
	case len(id) > 256:
		return BadRequest("pod_id", "longer than 256 bytes")
	case strings.ContainsAny(id, "/\x00"):
		// Pod IDs become parts of file names in weftd's state directory.
		return BadRequest("pod_id", fmt.Sprintf("%q contains '/' or NUL", id))
	case !utf8.ValidString(id):
		// JSON would rewrite it, and the ID would stop matching itself.
		return BadRequest("pod_id", fmt.Sprintf("%q is not valid UTF-8", id))
	case strings.ContainsFunc(id, unicode.IsControl):
		return BadRequest("pod_id", fmt.Sprintf("%q contains control characters", id))
	}
	return nil
}

// checkNetnsPath refuses what cannot name a namespace the same way for
// every reader: a relative path depends on the server's working
// directory, and ".." hides where it leads. Which directories are allowed
// is the server's to say.
func checkNetnsPath(p string) error {
	switch {
	case p == "":
		return BadRequest("netns", "required (the path of the pod's network namespace)")
	case !path.IsAbs(p) || path.Clean(p) != p:
		return BadRequest("netns", fmt.Sprintf("%q is not a clean absolute path", p))
	}
	return nil
}

func checkIfName(name string) error {
	// Linux interface names: at most 15 bytes, no '/', ':' or white space.
	if len(name) > 15 || name == "." || name == ".." || strings.ContainsAny(name, "/: \t\n\x00") {
		return BadRequest("ifname", fmt.Sprintf("%q is not a valid interface name", name))
	}
	return nil
}

// Peer is a remote node in this node's peer table (GET /v1/peers).
type Peer struct {
	Node      string       `json:"node"`
	Underlay  netip.Addr   `json:"underlay"`
	Subnet    netip.Prefix `json:"subnet"`
	RouterMAC packet.MAC   `json:"router_mac"`
	VNI       uint32       `json:"vni"`
	Expires   time.Time    `json:"expires"`   // end of the peer's registry lease
	TxFrames  uint64       `json:"tx_frames"` // sent to the peer
	RxFrames  uint64       `json:"rx_frames"`
	TxBytes   uint64       `json:"tx_bytes"`
	RxBytes   uint64       `json:"rx_bytes"`
	// Foreign: a node that runs no weftd (weft node add).
	Foreign bool `json:"foreign,omitempty"`
	// RxBadL4Checksum: inner TCP/UDP packets from a foreign peer whose
	// checksum did not verify (see README: ethtool -K IFACE tx off).
	RxBadL4Checksum uint64 `json:"rx_bad_l4_checksum,omitempty"`
}

// FDBEntry is one learned MAC address of the L2 switch (GET /v1/fdb).
type FDBEntry struct {
	MAC      packet.MAC `json:"mac"`
	Port     int        `json:"port"`
	PortName string     `json:"port_name"`
	Age      Duration   `json:"age"` // since the MAC was last seen
}

// Route kinds.
const (
	RouteLocal = "local" // this node's pod subnet: delivered through the neighbour table
	RoutePeer  = "peer"  // another node's subnet: VXLAN to that node
)

// Route is one entry of the router's longest-prefix-match table
// (GET /v1/routes).
type Route struct {
	Prefix  netip.Prefix `json:"prefix"`
	Kind    string       `json:"kind"`              // RouteLocal, RoutePeer, or another kind the node defines
	Via     netip.Addr   `json:"via,omitzero"`      // peer's underlay address (peer routes)
	Peer    string       `json:"peer,omitempty"`    // peer's node name (peer routes)
	PeerMAC packet.MAC   `json:"peer_mac,omitzero"` // peer's router MAC (peer routes)
}

// Neighbour maps a local IP to the MAC and port it lives behind
// (GET /v1/neigh).
type Neighbour struct {
	IP       netip.Addr `json:"ip"`
	MAC      packet.MAC `json:"mac"`
	Port     int        `json:"port"`
	PortName string     `json:"port_name,omitempty"`
	Static   bool       `json:"static"` // set at attach time rather than learned from ARP
	Age      Duration   `json:"age"`
}

// IPAMAllocation is one pod address handed out by this node.
type IPAMAllocation struct {
	PodID  string     `json:"pod_id"`
	IfName string     `json:"ifname"`
	IP     netip.Addr `json:"ip"`
	Since  time.Time  `json:"since"`
}

// IPAM is the address use of this node's pod subnet (GET /v1/ipam).
type IPAM struct {
	Subnet      netip.Prefix     `json:"subnet"`
	Used        int              `json:"used"`
	Free        int              `json:"free"`
	Allocations []IPAMAllocation `json:"allocations"`
}

// Unknown marks a count a node does not know, such as the address use of
// another node's subnet.
const Unknown = -1

// Subnet is one node subnet of the cluster as the registry lists it
// (GET /v1/subnets), this node's included.
type Subnet struct {
	Node      string       `json:"node"`
	Self      bool         `json:"self"` // the node answering
	Underlay  netip.Addr   `json:"underlay"`
	Subnet    netip.Prefix `json:"subnet"`
	RouterMAC packet.MAC   `json:"router_mac"`
	Expires   time.Time    `json:"expires"`
	Used      int          `json:"used"` // Unknown when not known
	Free      int          `json:"free"` // Unknown when not known
}

// Counters are a node's packet counters by name (GET /v1/counters). Names
// are "category.name" in snake_case; drops are "drop.<reason>" with one
// entry per drop reason, zero or not, e.g. "drop.no_route",
// "tap.rx_frames", "vxlan.tx_bytes".
type Counters map[string]uint64

// Trace protocols.
const (
	ProtoTCP  = "tcp"
	ProtoUDP  = "udp"
	ProtoICMP = "icmp"
)

// TraceRequest asks what the pipeline would do with one frame entering at
// a port (POST /v1/trace). Either Frame is given, or the node builds a
// frame from Src, Dst, Proto, SPort, DPort, TTL and Size.
type TraceRequest struct {
	In    string     `json:"in"`           // pod ID or port name
	Src   netip.Addr `json:"src,omitzero"` // default: the port's own address
	Dst   netip.Addr `json:"dst,omitzero"`
	Proto string     `json:"proto,omitempty"` // ProtoTCP, ProtoUDP or ProtoICMP (default)
	SPort uint16     `json:"sport,omitempty"`
	DPort uint16     `json:"dport,omitempty"`
	TTL   uint8      `json:"ttl,omitempty"`   // default 64
	Size  int        `json:"size,omitempty"`  // IP total length; default the node's choice
	Frame []byte     `json:"frame,omitempty"` // a whole Ethernet frame (base64 in JSON)
}

// MaxTraceFrame bounds TraceRequest.Frame: one TSO super-frame plus headers.
const MaxTraceFrame = 65535 + 14

// Normalize fills defaults and checks the fields, as AttachRequest.Normalize.
func (r *TraceRequest) Normalize() error {
	if r.In == "" {
		return BadRequest("in", "required (a pod ID or a port name)")
	}
	if len(r.Frame) > 0 {
		if len(r.Frame) > MaxTraceFrame {
			return BadRequest("frame", fmt.Sprintf("%d bytes is longer than %d", len(r.Frame), MaxTraceFrame))
		}
		if r.Src.IsValid() || r.Dst.IsValid() || r.Proto != "" || r.SPort != 0 || r.DPort != 0 {
			return BadRequest("frame", "give either a frame or src/dst/proto/ports, not both")
		}
		return nil
	}
	if !r.Dst.IsValid() {
		return BadRequest("dst", "required when no frame is given")
	}
	if !r.Dst.Is4() {
		return BadRequest("dst", fmt.Sprintf("%s is not an IPv4 address", r.Dst))
	}
	if r.Src.IsValid() && !r.Src.Is4() {
		return BadRequest("src", fmt.Sprintf("%s is not an IPv4 address", r.Src))
	}
	if r.Proto == "" {
		r.Proto = ProtoICMP
	}
	switch r.Proto {
	case ProtoTCP, ProtoUDP:
		if r.DPort == 0 {
			return BadRequest("dport", "required for "+r.Proto)
		}
	case ProtoICMP:
		if r.SPort != 0 || r.DPort != 0 {
			return BadRequest("sport", "ports are for tcp and udp, not icmp")
		}
	default:
		return BadRequest("proto", fmt.Sprintf("%q is not tcp, udp or icmp", r.Proto))
	}
	if r.TTL == 0 {
		r.TTL = 64
	}
	if r.Size < 0 || r.Size > 65535 {
		return BadRequest("size", fmt.Sprintf("%d is out of range 0..65535", r.Size))
	}
	return nil
}

// TraceStep is one stage of the pipeline and what it decided.
type TraceStep struct {
	Stage    string `json:"stage"`    // e.g. "port-check", "l2", "l3", "output"
	Decision string `json:"decision"` // e.g. "route 10.244.2.0/24 via node-b (192.168.1.11)"
}

// TraceResponse is the path of a traced frame.
type TraceResponse struct {
	Steps   []TraceStep `json:"steps"`
	Verdict string      `json:"verdict"` // e.g. "deliver port 3", "encap node-b", "drop no_route"
}

// Duration is a time.Duration that reads and writes JSON as a Go duration
// string ("1m30s"), so that people and jq alike can read it.
type Duration time.Duration

// String formats d as time.Duration does.
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}
