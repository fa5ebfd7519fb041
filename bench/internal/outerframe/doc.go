// Package outerframe writes and reads full outer VXLAN frames (Ethernet,
// IPv4, UDP, VXLAN) as a pcap or an AF_PACKET socket holds them. weftd never
// sees one: its socket (overlay.Conn) delivers UDP payloads and the kernel
// adds the outer headers on send. Only bench's capture replay needs the full
// form, to tell which captured underlay frames a VXLAN socket would receive
// at all; the VXLAN header and everything after it is left to the daemon's
// own overlay.Decapper.
package outerframe
