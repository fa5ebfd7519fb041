package vswitch

import (
	"net/netip"
	"sync/atomic"

	"github.com/weftnet/weft/switch/conntrack"
)

// PortID names a port. IDs are small integers chosen by the node, below
// MaxPorts; the switch indexes its port table with them.
type PortID uint16

// MaxPorts bounds PortID values (IDs 0..MaxPorts-1 are valid).
const MaxPorts = 4096

// Action is what the caller does with a frame after Process.
type Action uint8

const (
	// ActionDrop discards the frame; Verdict.Reason says why.
	ActionDrop Action = iota
	// ActionDeliver writes the frame to Verdict.Port.
	ActionDeliver
	// ActionFlood writes the frame to every port in FloodSet(Verdict.Port):
	// Verdict.Port is the ingress port, which is left out.
	ActionFlood
	// ActionEncap sends the frame to the peer node at underlay address
	// Verdict.Peer. The inner Ethernet header is already rewritten (our
	// router MAC -> the peer's router MAC) and the TTL decremented; the
	// caller prepends the VXLAN headers.
	ActionEncap
)

func (a Action) String() string {
	switch a {
	case ActionDrop:
		return "drop"
	case ActionDeliver:
		return "deliver"
	case ActionFlood:
		return "flood"
	case ActionEncap:
		return "encap"
	}
	return "action?"
}

// Verdict is Process's decision for one frame.
type Verdict struct {
	Action Action
	// Port: the output port for ActionDeliver; the ingress port (to leave
	// out) for ActionFlood.
	Port PortID
	// Peer is the underlay address of the peer node for ActionEncap.
	Peer netip.Addr
	// Reason is set for ActionDrop. For a Reply it names what the reply
	// answers (e.g. DropTTLExpired for a time-exceeded error, DropNeighMiss
	// for an ARP request): the original frame was consumed.
	Reason DropReason
	// Reply marks a frame the switch rewrote into an answer of its own (ARP
	// reply or request, ICMP error, echo reply) rather than forwarded.
	Reply bool
}

// DropReason says why a frame was not forwarded as itself.
type DropReason uint8

const (
	DropNone             DropReason = iota // not dropped
	DropTooShort                           // shorter than its headers
	DropUnknownPort                        // ingress port not (or no longer) attached
	DropVLAN                               // 802.1Q / 802.1ad tagged
	DropUnknownEtherType                   // not IPv4, ARP or IPv6
	DropBadSrcMAC                          // source MAC multicast or zero
	DropSpoofed                            // pod port: source MAC/IP not the port's own
	DropBadARP                             // ARP not Ethernet/IPv4 request or reply
	DropBadIPv4                            // malformed IPv4 header or bad header checksum
	DropBadIPv6                            // malformed IPv6 header
	DropHairpin                            // output port == input port
	DropOverlayNotRouter                   // from the overlay but not addressed to our router MAC
	DropOverlayNotIPv4                     // from the overlay to our router MAC but not IPv4
	DropIPv6NotRouted                      // IPv6 to the router MAC: weft routes IPv4 only
	DropForRouter                          // addressed to the router itself and consumed (ARP reply, non-echo IP to the gateway)
	DropMartian                            // routed destination is broadcast, multicast or a subnet's network/broadcast address
	DropNoRoute                            // no route to the destination
	DropTTLExpired                         // TTL reached zero
	DropFragNeeded                         // DF set and larger than the output MTU
	DropTooBig                             // larger than the output MTU, DF clear: weft does not fragment
	DropNeighMiss                          // Local route but no neighbour entry for the next hop
	DropICMPRateLimited                    // needed an ICMP error, the rate limiter refused it
	DropNoRoom                             // the buffer has no capacity left for the reply
	DropPodIPv6                            // IPv6 from a pod port: weft carries no IPv6 yet (RA/ND would reach neighbours)
	DropL2TooBig                           // switched frame (or GSO segment) larger than an output port's MTU
	DropFloodRateLimited                   // flood (broadcast, multicast, unknown unicast) over its ingress port's rate
	DropSvcNoEndpoints                     // new flow to a service with no eligible endpoint (refused: ICMP port unreachable)
	DropSvcNoLocal                         // internalTrafficPolicy Local and no endpoint on this node
	DropCTFull                             // new flow, conntrack table full
	DropCTClash                            // new flow whose reply tuple is another flow's (hairpin SNAT port clash)
	DropCTInvalid                          // TCP RST to a service with no tracked flow
	DropPolicyEgress                       // NetworkPolicy: the source pod is isolated for egress and nothing allows the flow
	DropPolicyIngress                      // NetworkPolicy: the destination pod is isolated for ingress and nothing allows the flow
	DropPolicyNotReady                     // NetworkPolicy: no policies loaded yet (node starting): deny all
	DropPolicyFlow                         // NetworkPolicy: a tracked flow whose verdict is deny (cut after a policy change)
	NumDropReasons                         // number of reasons; not a reason
)

var dropNames = [NumDropReasons]string{
	DropNone:             "none",
	DropTooShort:         "too_short",
	DropUnknownPort:      "unknown_port",
	DropVLAN:             "vlan",
	DropUnknownEtherType: "unknown_ethertype",
	DropBadSrcMAC:        "bad_src_mac",
	DropSpoofed:          "spoofed",
	DropBadARP:           "bad_arp",
	DropBadIPv4:          "bad_ipv4",
	DropBadIPv6:          "bad_ipv6",
	DropHairpin:          "hairpin",
	DropOverlayNotRouter: "overlay_not_router",
	DropOverlayNotIPv4:   "overlay_not_ipv4",
	DropIPv6NotRouted:    "ipv6_not_routed",
	DropForRouter:        "for_router",
	DropMartian:          "martian",
	DropNoRoute:          "no_route",
	DropTTLExpired:       "ttl_expired",
	DropFragNeeded:       "frag_needed",
	DropTooBig:           "too_big",
	DropNeighMiss:        "neigh_miss",
	DropICMPRateLimited:  "icmp_rate_limited",
	DropNoRoom:           "no_room",
	DropPodIPv6:          "pod_ipv6_unsupported",
	DropL2TooBig:         "l2_too_big",
	DropFloodRateLimited: "flood_rate_limited",
	DropSvcNoEndpoints:   "svc_no_endpoints",
	DropSvcNoLocal:       "svc_no_local_endpoints",
	DropCTFull:           "conntrack_full",
	DropCTClash:          "conntrack_clash",
	DropCTInvalid:        "conntrack_invalid",
	DropPolicyEgress:     "policy_egress",
	DropPolicyIngress:    "policy_ingress",
	DropPolicyNotReady:   "policy_not_ready",
	DropPolicyFlow:       "policy_flow_denied",
}

// String is the reason's metric label (snake case, stable).
func (r DropReason) String() string {
	if r < NumDropReasons {
		return dropNames[r]
	}
	return "unknown"
}

// Counters is a snapshot of the switch's counters. A frame that is not
// forwarded as itself counts once in Drops under its cause, whether or not
// the router answered it; the answers are counted separately below.
type Counters struct {
	Drops [NumDropReasons]uint64

	ARPReplies  uint64 // ARP replies for the gateway
	ARPRequests uint64 // ARP requests sent on a neighbour miss
	ICMPErrors  uint64 // ICMP errors sent (time exceeded, unreachable, frag needed)
	EchoReplies uint64 // echo replies from the gateway address

	FDBLearned uint64 // new MACs
	FDBMoved   uint64 // MACs seen on another port
	FDBEvicted uint64 // oldest entries pushed out by a full table
	FDBExpired uint64 // entries aged out
	FDBEntries uint64 // entries now (a gauge)

	NeighLearned uint64 // learned neighbours from ARP, new or changed
	NeighEvicted uint64
	NeighExpired uint64

	Conntrack conntrack.Stats // flows tracked (gauge), inserts, full, clashes, expired, flushed

	// Replies from a service backend that matched no flow (after a
	// restart): taken up and reverse-translated, or left untouched
	// because no single frontend explains them.
	ReplyRecovered   uint64
	ReplyUnrecovered uint64
	// FragTranslated counts later IP fragments given the addresses their
	// datagram's first fragment was translated to (frag.go).
	FragTranslated uint64
}

// TotalDrops sums Drops over every reason.
func (c *Counters) TotalDrops() uint64 {
	var n uint64
	for _, v := range c.Drops {
		n += v
	}
	return n
}

// paddedCounter keeps each hot counter on its own cache line so that two
// workers counting different reasons do not bounce a line between cores.
type paddedCounter struct {
	atomic.Uint64
	_ [56]byte
}

type counters struct {
	drops       [NumDropReasons]paddedCounter
	arpReplies  paddedCounter
	arpRequests paddedCounter
	icmpErrors  paddedCounter
	echoReplies paddedCounter

	neighLearned, neighEvicted, neighExpired atomic.Uint64

	replyRecovered, replyUnrecovered atomic.Uint64
	fragTranslated                   atomic.Uint64
}
