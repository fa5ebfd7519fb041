// Package bench measures weft's forwarding pipeline on recorded traffic:
// a traffic generator that writes pcaps with gopacket (layers and pcapgo
// only, no cgo), and a replay that runs any Ethernet pcap through the same
// per-frame work as the node's workers — vswitch.Switch.Process, overlay
// decapsulation and encapsulation — with counting sinks in place of TAPs
// and sockets, so that the figures are the pipeline's cost per frame on one
// core, free of syscalls.
//
// # Topology
//
// Generated traffic and the replay assume one node (DefaultTopology):
//
//	node subnet 10.244.1.0/24, gateway 10.244.1.1 = the router, MAC 02:77:66:00:01:01
//	port 0     overlay (decapsulated frames enter here)
//	port 1     host port weft0, 10.244.1.2, MAC 02:00:0a:f4:01:02
//	port 2..9  pods 10.244.1.3 .. 10.244.1.10, MAC 02:00:0a:f4:01:03 .. :0a
//	underlay   192.168.1.1 (MAC 02:55:c0:a8:01:01), routed via 192.168.1.254
//	           (MAC 02:55:c0:a8:01:fe); VXLAN VNI 1, UDP 4789
//	peers      node2..node5: 10.244.2.0/24 .. 10.244.5.0/24 via 192.168.1.2 .. .5,
//	           router MACs 02:77:66:00:0N:01
//
// Topology.WithRoutes(5000) pads the route and peer tables to 5,000 nodes
// (10.0.0.0/24 .. 10.19.131.0/24 via 192.168.10.1 .. 192.168.29.246), a 5,000-node
// cluster as one node sees it.
//
// # Replay
//
// The ingress of each captured frame is decided once, when the capture is
// loaded (Topology.Ingress): an IPv4 frame to the underlay address goes
// through decapsulation and then the overlay port; any other frame enters
// on the port whose MAC is its source MAC, or on the host port. Frames are
// grouped per ingress port, in capture order, into batches of up to 64.
// A pass copies each batch's frames into preallocated buffers with 64
// bytes of headroom (the node's layout), runs it through the pipeline and
// carries out the verdicts; see Replayer.
//
// # Captures of underlay traffic
//
// A capture taken between nodes (VXLAN on the underlay, as
// testdata/captures/sim-crossnode.pcap from a `weft sim`) does not fit
// the synthetic topology. AsNode replays it as one of its nodes (by
// default the VXLAN destination seen most) with the topology derived from
// the capture: the node's subnet, router MAC, VNI and underlay from its
// VXLAN frames, a pod port per local address the inner frames show (MAC
// 0a:58:<IPv4>, as the node derives it), a peer per other VXLAN endpoint
// (router MAC and /24 from the frames it sends). VXLAN frames to the node
// are replayed as captured (decapsulation, overlay port, delivery);
// VXLAN frames from the node are replayed as the TAP frames its pods
// wrote (the inner frame from the pod's MAC to the router MAC, TTL given
// back), so they are routed and encapsulated again. Underlay ARP, IPv6
// and anything else are left out and counted (UnderlayCapture.Skipped).
// `weft-bench replay -pcap FILE` does this by itself for a capture whose
// VXLAN does not involve the synthetic node; -as-node ADDR picks the node.
//
// Committed captures: testdata/<scenario>.pcap, the output of each
// Scenario for DefaultTopology; a test keeps them in step with the
// generator. Regenerate with
//
//	go run ./cmd/weft-bench gen -all -dir bench/testdata
package bench
