package sim

import (
	"context"
	"net"

	"github.com/weftnet/weft/netdev"
)

// Sockets keep the namespace they were created in, so a socket opened on a
// thread switched into a sim namespace carries traffic there for its whole
// life, whichever goroutine then uses it. These helpers let the sim (and
// its tests) talk from inside pods and nodes without a process per probe.

// DialIn dials addr on network from inside the named namespace. Give
// literal addresses: a name lookup could run on another thread.
func DialIn(ctx context.Context, netns, network, addr string) (net.Conn, error) {
	var conn net.Conn
	err := netdev.Do(netdev.NetnsPath(netns), func() error {
		var d net.Dialer
		var err error
		conn, err = d.DialContext(ctx, network, addr)
		return err
	})
	return conn, err
}

// ListenIn listens on addr (tcp, tcp4, unix...) inside the named namespace.
func ListenIn(netns, network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := netdev.Do(netdev.NetnsPath(netns), func() error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// ListenPacketIn opens a packet socket (udp, udp4) on addr inside the named
// namespace.
func ListenPacketIn(netns, network, addr string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := netdev.Do(netdev.NetnsPath(netns), func() error {
		var err error
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	return pc, err
}
