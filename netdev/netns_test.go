package netdev

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/internal/testenv"
)

// nsInode identifies a namespace file.
func nsInode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return st.Ino
}

func TestNetnsLifecycleAndDo(t *testing.T) {
	testenv.RequireRoot(t)
	name := testenv.UniqueName("wnd")
	path, err := NewNetns(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { DeleteNetns(name) })
	if path != NetnsPath(name) {
		t.Errorf("path %s, want %s", path, NetnsPath(name))
	}
	if _, err := NewNetns(name); !errors.Is(err, os.ErrExist) {
		t.Errorf("second NewNetns: %v, want os.ErrExist", err)
	}
	home := nsInode(t, "/proc/self/ns/net")
	var inside uint64
	if err := Do(path, func() error {
		inside = nsInode(t, "/proc/thread-self/ns/net")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if inside != nsInode(t, path) || inside == home {
		t.Errorf("Do ran in netns inode %d, want %d (home %d)", inside, nsInode(t, path), home)
	}
	// f's error comes back; the empty path means the caller's namespace.
	sentinel := errors.New("from f")
	if err := Do("", func() error {
		if got := nsInode(t, "/proc/thread-self/ns/net"); got != home {
			t.Errorf("Do(\"\") ran in %d, want %d", got, home)
		}
		return sentinel
	}); err != sentinel {
		t.Errorf("Do returned %v, want f's error", err)
	}
	if err := Do(NetnsPath(testenv.UniqueName("wnd")), func() error { return nil }); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Do in a missing namespace: %v, want os.ErrNotExist", err)
	}
	h, err := OpenHandle(path)
	if err != nil {
		t.Fatal(err)
	}
	lo, err := h.LinkByName("lo")
	h.Close()
	if err != nil || lo.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("loopback in a new netns: %v %v, want up", lo, err)
	}
	for i := range 2 {
		if err := DeleteNetns(name); err != nil {
			t.Fatalf("DeleteNetns #%d: %v", i+1, err)
		}
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("namespace file still there: %v", err)
	}
	for _, bad := range []string{"", "..", "a/b"} {
		if _, err := NewNetns(bad); err == nil {
			t.Errorf("NewNetns(%q) succeeded", bad)
		}
	}
}

// TestVethCarriesTraffic: a veth pair between two namespaces, an extra
// address and a route added with the helpers, and UDP from one namespace
// reaching the other over both.
func TestVethCarriesTraffic(t *testing.T) {
	testenv.RequireRoot(t)
	nsA, nsB := newTestNetns(t), newTestNetns(t)
	a := VethEnd{Name: "va", NetnsPath: nsA, MTU: 1400, MAC: [6]byte{0x02, 0x77, 0x6e, 0x64, 0, 0xa}, Addr: netip.MustParsePrefix("10.99.1.1/24")}
	b := VethEnd{Name: "vb", NetnsPath: nsB, MTU: 1400, Addr: netip.MustParsePrefix("10.99.1.2/24")}
	if err := NewVeth(a, b); err != nil {
		t.Fatalf("NewVeth: %v", err)
	}
	t.Cleanup(func() { DeleteLink(nsA, "va") })
	if err := NewVeth(a, b); err == nil {
		t.Error("second NewVeth with the same names succeeded")
	}
	extra := netip.MustParsePrefix("10.99.2.1/32")
	if err := AddAddr(nsB, "vb", extra); err != nil {
		t.Fatal(err)
	}
	if err := AddAddr(nsB, "vb", extra); err != nil {
		t.Errorf("AddAddr twice: %v", err)
	}
	for range 2 {
		if err := AddRoute(nsA, "va", extra, b.Addr.Addr()); err != nil {
			t.Fatalf("AddRoute: %v", err)
		}
	}
	h, _ := OpenHandle(nsA)
	l, err := h.LinkByName("va")
	h.Close()
	if err != nil || l.Attrs().MTU != 1400 || [6]byte(l.Attrs().HardwareAddr) != a.MAC || l.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("veth end va: %v %v", l, err)
	}

	var rx *net.UDPConn
	if err := Do(nsB, func() (err error) {
		rx, err = net.ListenUDP("udp4", &net.UDPAddr{Port: 9999})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	var tx *net.UDPConn
	if err := Do(nsA, func() (err error) {
		tx, err = net.ListenUDP("udp4", &net.UDPAddr{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	for _, dst := range []netip.Addr{b.Addr.Addr(), extra.Addr()} {
		if _, err := tx.WriteToUDPAddrPort([]byte("weft"), netip.AddrPortFrom(dst, 9999)); err != nil {
			t.Fatalf("send to %s: %v", dst, err)
		}
		rx.SetReadDeadline(time.Now().Add(ioTimeout))
		buf := make([]byte, 16)
		n, from, err := rx.ReadFromUDPAddrPort(buf)
		if err != nil || string(buf[:n]) != "weft" || from.Addr() != a.Addr.Addr() {
			t.Errorf("datagram to %s: %q from %s, err %v", dst, buf[:n], from, err)
		}
	}
	if err := DeleteLink(nsA, "va"); err != nil {
		t.Fatal(err)
	}
	if err := DeleteLink(nsA, "va"); err != nil {
		t.Errorf("DeleteLink twice: %v", err)
	}
	hb, _ := OpenHandle(nsB)
	defer hb.Close()
	if _, err := hb.LinkByName("vb"); !isLinkNotFound(err) {
		t.Errorf("peer end survived: %v", err)
	}
}
