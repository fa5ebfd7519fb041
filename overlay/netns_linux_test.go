//go:build linux

package overlay

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/weftnet/weft/internal/testenv"
)

// The Conn tests run between two network namespaces joined by a veth pair,
// all created here and deleted in t.Cleanup, so no packet touches the root
// namespace:
//
//	netns wovXXXXXX (A)                    netns wovYYYYYY (B)
//	  wovXXXXXXa 10.99.0.1/24 <--veth--> wovXXXXXXb 10.99.0.2/24

// underlayPair is the test topology.
type underlayPair struct {
	nsA, nsB     netns.NsHandle
	addrA, addrB netip.Addr
	linkA, linkB string // the veth ends
}

// inNetns runs fn on a fresh OS thread switched into ns. The goroutine
// exits with the thread still locked, so the runtime discards the thread
// instead of reusing it in the wrong namespace; nothing needs restoring.
func inNetns(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked, on purpose (see above)
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// newNetns creates a named network namespace and schedules its deletion.
func newNetns(t testing.TB) netns.NsHandle {
	t.Helper()
	name := testenv.UniqueName("wov")
	type result struct {
		h   netns.NsHandle
		err error
	}
	rc := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // NewNamed moves this thread into the new netns; let it die with the goroutine
		h, err := netns.NewNamed(name)
		rc <- result{h, err}
	}()
	r := <-rc
	t.Cleanup(func() {
		if r.err == nil {
			r.h.Close()
		}
		if err := netns.DeleteNamed(name); err != nil && r.err == nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	if r.err != nil {
		t.Fatalf("create netns %s: %v", name, r.err)
	}
	h, err := netlink.NewHandleAt(r.h)
	if err != nil {
		t.Fatalf("netlink handle in netns %s: %v", name, err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatalf("set lo up in netns %s: %v", name, err)
	}
	return r.h
}

// newUnderlayPair builds the two-namespace topology.
func newUnderlayPair(t testing.TB) *underlayPair {
	t.Helper()
	testenv.RequireRoot(t)
	u := &underlayPair{
		nsA: newNetns(t), nsB: newNetns(t),
		addrA: netip.MustParseAddr("10.99.0.1"), addrB: netip.MustParseAddr("10.99.0.2"),
	}
	base := testenv.UniqueName("wov")
	nameA, nameB := base+"a", base+"b"
	u.linkA, u.linkB = nameA, nameB
	hA, err := netlink.NewHandleAt(u.nsA)
	if err != nil {
		t.Fatalf("netlink handle in netns A: %v", err)
	}
	defer hA.Close()
	hB, err := netlink.NewHandleAt(u.nsB)
	if err != nil {
		t.Fatalf("netlink handle in netns B: %v", err)
	}
	defer hB.Close()
	// Created in A with its peer put straight into B; deleting either
	// namespace deletes the pair.
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: nameA}, PeerName: nameB, PeerNamespace: netlink.NsFd(int(u.nsB))}
	if err := hA.LinkAdd(veth); err != nil {
		t.Fatalf("add veth %s/%s: %v", nameA, nameB, err)
	}
	for _, side := range []struct {
		h    *netlink.Handle
		name string
		addr netip.Addr
	}{{hA, nameA, u.addrA}, {hB, nameB, u.addrB}} {
		link, err := side.h.LinkByName(side.name)
		if err != nil {
			t.Fatalf("find %s: %v", side.name, err)
		}
		ipn := &net.IPNet{IP: side.addr.AsSlice(), Mask: net.CIDRMask(24, 32)}
		if err := side.h.AddrAdd(link, &netlink.Addr{IPNet: ipn}); err != nil {
			t.Fatalf("address %s on %s: %v", side.addr, side.name, err)
		}
		if err := side.h.LinkSetUp(link); err != nil {
			t.Fatalf("set %s up: %v", side.name, err)
		}
	}
	return u
}

// listen opens a Conn inside ns and closes it in t.Cleanup.
func listen(t testing.TB, ns netns.NsHandle, cfg ConnConfig) *Conn {
	t.Helper()
	var c *Conn
	err := inNetns(ns, func() error {
		var err error
		c, err = ListenConn(context.Background(), cfg)
		return err
	})
	if err != nil {
		t.Fatalf("ListenConn %v: %v", cfg.Addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
