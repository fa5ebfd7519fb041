// Package overlay carries Ethernet frames between weft nodes over the
// underlay network as VXLAN (RFC 7348): encapsulation and decapsulation over
// caller-owned byte slices, the table of peer nodes that decapsulation trusts,
// and Conn, the batched UDP socket the workers send and receive on.
//
// Wire format: plain VXLAN over IPv4/UDP, so a Linux kernel VXLAN device (as
// flannel's vxlan backend creates one) can be a peer. Senders pick the outer
// UDP source port from a hash of the inner flow the way the kernel does
// (udp_flow_src_port), so one pod-to-pod flow always takes the same underlay
// 4-tuple (per-flow order on ECMP paths and NIC RSS queues) while different
// flows spread.
//
// Buffer layout. Every function here works in place. The inner frame sits at
// buf[off:off+n]; encapsulation writes headers into the headroom in front of
// it and returns the new start, never copying the payload:
//
//	socket form (Conn; the kernel adds IP and UDP):
//	  buf[off-8 : off]     VXLAN header
//
// That is the only form weftd runs. Full outer frames (Ethernet, IPv4, UDP,
// VXLAN: pcaps, raw sockets) are bench's business, in
// bench/internal/outerframe; OuterIPv4Len stays here because it sizes the
// pod MTU.
//
// Decapsulation returns the inner frame as a sub-slice of its input and a
// DropReason. Every drop is counted in a Counters value by reason; nothing on
// these paths allocates, logs, or panics on malformed input.
//
// Concurrency: the encap/decap functions are pure and safe from any
// goroutine. PeerTable readers never block (atomic snapshot) and Set is safe
// to call concurrently with them. A Conn belongs to one worker goroutine.
package overlay
