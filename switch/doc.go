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
// top to bottom in pipeline.go: port checks (anti-spoofing) -> [later:
// conntrack, service NAT, policy] -> L2 -> L3 -> output. Process rewrites
// frames in place (MAC rewrite, TTL, ARP replies, ICMP errors) and may
// change a frame's length within its capacity; it never allocates.
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
