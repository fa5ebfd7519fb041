// Package datapath is the per-packet work of weftd, from read to write,
// written once for both modes (virtio-header TAPs with offloads, and plain
// TAPs) and both directions:
//
//	Transmitter.Transmit  TAP read -> prepare -> Switch.ProcessGSO -> emit
//	Receiver.Receive      UDP read (GRO) -> decap -> Switch.Process -> emit
//
// emit is the one verdict dispatcher: deliver a frame whole, split or
// coalesced as the output device wants, flood it, or encapsulate it for a
// peer (VXLAN header in the headroom in front of a frame, or segments of a
// super-frame packed into an arena), then flush once per batch.
//
// A batch is the same in both modes: plain mode is a batch whose frames
// carry a zero virtio header, and a plain underlay read is a GRO read of
// one segment per datagram. Every frame the data path does not forward is
// counted under one drop-reason space (Reason) that composes the switch's
// reasons, the decapsulator's, the devices' and the data path's own.
//
// Ownership: each Transmitter and Receiver owns its batch state and its
// own underlay send socket (the node gives each one, SO_REUSEPORT). The big
// buffers (a transmitter's read batch, the segment arena, the split
// buffer) come from pools of the data path (bufpool.go): a worker takes a
// set when it has frames to read and gives it back after the flush, so a
// pod that sends nothing holds none; the set is the worker's alone in
// between. Nothing else is shared per batch but the switch, the peer
// table and atomic counters. The
// one exception is documented on Transmitter.Transmit: a Receiver that just
// wrote to a pod's TAP may run that TAP's Transmitter in its place, holding
// the TAP's read turn, which is what makes it the Transmitter's owner for
// the call.
//
// The package runs over netdev.Device (a Tap, or a netdev.Fake in tests
// and in bench's replay) and over the small Reader/Writer interfaces an
// overlay socket satisfies, so the replay benchmark runs exactly this code.
package datapath
