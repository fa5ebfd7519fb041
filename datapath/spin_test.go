package datapath

import (
	"testing"
	"time"

	"github.com/weftnet/weft/netdev"
)

// TestRxSpinDeadline: with Config.RxSpin a transmitter's send to a peer
// moves the readers' spin deadline to about RxSpin from now; a local
// delivery does not; without RxSpin there is no deadline to give readers.
func TestRxSpinDeadline(t *testing.T) {
	r := newRig(t, modes[2].offloads, false)
	if r.dp.SpinDeadline() != nil {
		t.Fatal("a deadline without RxSpin")
	}
	const spin = 300 * time.Microsecond
	r = newRig(t, modes[2].offloads, false)
	r.dp.cfg.RxSpin = spin
	r.txA = r.dp.NewTransmitter(r.a, r.dpA, r.out) // made after RxSpin is set
	d := r.dp.SpinDeadline()
	if d == nil {
		t.Fatal("no deadline with RxSpin")
	}
	toB := udpFrame(podAMAC, routerMAC, podAIP, podBIP, 100, 64)
	must(t, writeVnet(r.podA, toB, netdev.VirtioHdr{}))
	r.txA.Transmit(false)
	if d.Load() != 0 {
		t.Errorf("a local delivery moved the deadline")
	}
	before := time.Now()
	toRemote := udpFrame(podAMAC, routerMAC, podAIP, remoteIP, 100, 64)
	must(t, writeVnet(r.podA, toRemote, netdev.VirtioHdr{}))
	r.txA.Transmit(false)
	if got := time.Unix(0, d.Load()); got.Before(before.Add(spin)) || got.After(time.Now().Add(spin)) {
		t.Errorf("deadline %v, want about %v after the send", got.Sub(before), spin)
	}
}
