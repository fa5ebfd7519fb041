package node

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/datapath"
	"github.com/weftnet/weft/netdev"
	"github.com/weftnet/weft/overlay"
	"github.com/weftnet/weft/packet"
)

// The node's side of the data path: which goroutines run, on which
// devices and sockets. What they do per packet is datapath's
// (Transmitter.Transmit, Receiver.Receive).

// port is one local switch port backed by a TAP: a pod's eth0 or the
// node's weft0. datapath.Port is the part the data path reads: device,
// transmitters, traffic counters.
type port struct {
	datapath.Port
	name    string
	mac     packet.MAC
	addr    netip.Prefix
	rec     PortRecord // zero for the host port
	since   time.Time
	hist    api.BatchHistogram
	closing atomic.Bool
}

// batchHist is the underlay's read-batch histogram.
type batchHist = api.BatchHistogram

// startPort gives each queue of p's TAP a transmitter with its own send
// socket and goroutine, and publishes p. On error nothing was started.
func (n *Node) startPort(p *port) error {
	p.Hist = &p.hist
	queues := []netdev.Device{p.Dev}
	if t, ok := p.Dev.(*netdev.Tap); ok {
		queues = queues[:0]
		for _, q := range t.Queues() { // TapConfig.Queues: one worker per queue
			queues = append(queues, q)
		}
	}
	var txs []*datapath.Transmitter
	var conns []*overlay.Conn
	for _, q := range queues {
		c, err := n.openSender()
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return err
		}
		conns = append(conns, c)
		txs = append(txs, n.dp.NewTransmitter(&p.Port, q, n.transmitWriter(c)))
	}
	n.ports[p.ID].Store(p)
	n.dp.SetPort(&p.Port)
	for i, tx := range txs {
		n.wg.Add(1)
		go n.runTransmitter(p, tx, conns[i])
	}
	return nil
}

// stopPort unpublishes p and closes its TAP, which ends its transmitters.
func (n *Node) stopPort(p *port) {
	n.dp.RemovePort(p.ID)
	n.ports[p.ID].Store(nil)
	p.Dev.Close()
}

// runTransmitter is the goroutine of one TAP queue: it runs until the TAP
// is closed or removed, then closes its send socket.
func (n *Node) runTransmitter(p *port, tx *datapath.Transmitter, out *overlay.Conn) {
	defer n.wg.Done()
	defer out.Close()
	n.portReadFailed(p, tx.Run())
}

// portReadFailed reports a TAP read error that ends a transmitter: quietly
// when the port was closed on purpose (detach, shutdown), once as a warning
// when the device went away under us (its namespace was deleted) — nothing
// will ever be read from it again.
func (n *Node) portReadFailed(p *port, err error) {
	if p.closing.Load() || n.ctx.Err() != nil || errors.Is(err, os.ErrClosed) {
		return
	}
	n.log.Warn("port read failed; port stops forwarding until detached", "port", p.name, "pod", p.rec.PodID, "err", err)
}

// runReceiver is the goroutine of one underlay receiving socket.
func (n *Node) runReceiver(rx *datapath.Receiver) {
	defer n.wg.Done()
	for {
		if n.underlayReadFailed(rx.Run()) {
			return
		}
	}
}

// underlayReadFailed handles an underlay read error: true when the socket
// was closed (shutdown) and the worker must stop; otherwise it logs, pauses
// so that a persistent error cannot spin a core, and the worker goes on.
func (n *Node) underlayReadFailed(err error) bool {
	if n.ctx.Err() != nil || errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) {
		return true
	}
	n.log.Error("underlay read", "err", err)
	time.Sleep(10 * time.Millisecond)
	return false
}
