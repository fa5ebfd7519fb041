// Package vswitch is weft's forwarding decision: ports, the L2 learning
// switch (FDB), the L3 router (gateway address, neighbour table, LPM
// routes) and the ARP and ICMP answers the router gives. It is pure Go over
// byte slices: no syscalls, no devices. The directory is switch/ but
// `switch` is a Go keyword, so import it as
//
//	vswitch "github.com/weftnet/weft/switch"
//
// # Hot path
//
// [Switch.Process] takes a batch of frames that arrived on one port and
// writes one [Verdict] per frame. The stages run in a fixed order that reads
// top to bottom in pipeline.go: port checks (anti-spoofing) -> conntrack ->
// service NAT -> policy -> L2 -> L3 -> output. Conntrack
// (package switch/conntrack) is looked up once per TCP/UDP frame; service
// NAT decides a flow's backend on its first packet (Maglev, package
// switch/maglev, or session affinity), records it in the flow's entry and
// rewrites every later packet from that entry alone; the policy stage
// (policy.go, [Switch.SetPolicy]) decides a flow's first packet after NAT
// and keeps the verdict in the same entry, re-deciding a flow only when
// the policies changed. Process rewrites
// frames in place (NAT, MAC rewrite, TTL, ARP replies, ICMP errors) and may
// change a frame's length within its capacity; it never allocates.
//
// # Services
//
// [Switch.SetServices] installs the frontends (cluster IP, port, protocol)
// and their backends. A new flow to a frontend is DNATed to a backend (the
// eligible ones: ready, else serving and terminating), and its replies are
// reverse-translated so the client sees the cluster IP; conntrack lives on
// the client's node, where the DNAT happened. With no eligible backend the
// connection is refused with ICMP port unreachable from the cluster IP;
// internalTrafficPolicy Local with no local backend drops (counted); a pod
// reaching itself through its service is masqueraded to the gateway
// address (hairpin). See nat.go and flushStale for what happens to flows
// whose backend goes away.
//
// # Tracing
//
// [Switch.Trace] runs the same stage code in dry mode. Stages report each
// decision with one call, c.trace(stage, step{...}), whose step is plain
// data; trace.go turns steps into text. On the hot path that call is a nil
// check and nothing is formatted.
//
// # Concurrency
//
// Process may run on several worker goroutines at once while the control
// plane adds ports and routes:
//
//   - Ports, routes and static neighbours are immutable snapshots swapped
//     whole through atomic.Pointer; Process loads each once per batch.
//     Control-plane writers serialise on one mutex and copy on write.
//   - The FDB and the learned neighbours are fixed-size open-addressed tables
//     that readers probe without any lock: an FDB slot is one atomic 64-bit
//     word (48-bit MAC | 16-bit port), so a reader can never pair a MAC with
//     another MAC's port; a neighbour slot (96 bits of key and value) is
//     guarded by a per-slot sequence counter. Writers (learning, moves,
//     aging) take a mutex, but the hot path writes only when something
//     changed: a new MAC, a move, or a last-seen refresh older than a tenth
//     of the maximum age (the trick weave's MAC cache uses). A reader that
//     races a concurrent delete may miss an entry for that one frame and
//     flood it (FDB) or count a neighbour miss: a learning switch's normal
//     behaviour for an unknown address, never a wrong port.
//   - Compared with an RWMutex-sharded map this keeps readers off shared
//     cache lines entirely (RLock is an atomic add that two cores fight
//     over) and bounds memory at construction, so there is no map growth
//     on the hot path.
//
// Aging runs out of band: the node calls [Switch.Expire] periodically.
// Time is a monotonic nanosecond count supplied by the caller so tests
// control it.
package vswitch
