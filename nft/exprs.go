package nft

import (
	"encoding/binary"
	"net/netip"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Builders of the nftables expressions weft's rules are made of. Each
// returns the expressions `nft` itself would generate for the quoted
// statement, so that `nft list table ip weft` prints them readably.

// IPv4 header offsets (RFC 791).
const (
	ipSrcOff = 12
	ipDstOff = 16
	// dstPortOff is the destination port in the TCP, UDP and SCTP headers
	// alike (RFC 9293, RFC 768, RFC 9260).
	dstPortOff = 2
)

// ipMatch is `ip saddr|daddr [!=] PREFIX`.
func ipMatch(off uint32, p netip.Prefix, neq bool) []expr.Any {
	op := expr.CmpOpEq
	if neq {
		op = expr.CmpOpNeq
	}
	a := p.Masked().Addr().As4()
	es := []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 4}}
	if p.Bits() < 32 {
		var m [4]byte
		binary.BigEndian.PutUint32(m[:], ^uint32(0)<<(32-p.Bits()))
		es = append(es, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: m[:], Xor: make([]byte, 4)})
	}
	return append(es, &expr.Cmp{Op: op, Register: 1, Data: a[:]})
}

// ifname pads an interface name the way the kernel stores it (IFNAMSIZ).
func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}

// ifMatch is `iifname|oifname [!=] NAME`.
func ifMatch(key expr.MetaKey, name string, neq bool) []expr.Any {
	op := expr.CmpOpEq
	if neq {
		op = expr.CmpOpNeq
	}
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: ifname(name)},
	}
}

// localDst is `fib daddr type local ip daddr != 127.0.0.0/8`: traffic for
// one of the node's own addresses, loopback excepted (DNAT of 127/8 to a
// pod needs route_localnet, which weft does not turn on).
func localDst() []expr.Any {
	es := []expr.Any{
		&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
	}
	return append(es, ipMatch(ipDstOff, netip.MustParsePrefix("127.0.0.0/8"), true)...)
}

// l4Dport is `meta l4proto PROTO th dport PORT`.
func l4Dport(proto string, port uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{protoNumbers[proto]}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: dstPortOff, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
	}
}

// ctDNAT is `ct status dnat`: the connection's destination was translated.
func ctDNAT() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATUS},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(ipsDstNAT), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

// loopback is 127.0.0.0/8.
var loopback = netip.MustParsePrefix("127.0.0.0/8")

// ctNotEstablished is `ct state != established,related`.
func ctNotEstablished() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: make([]byte, 4)},
	}
}

// ipsDstNAT is IPS_DST_NAT of the kernel's enum ip_conntrack_status.
const ipsDstNAT = 1 << 5

// dnatTo is `dnat to ADDR:PORT`.
func dnatTo(a netip.Addr, port uint16) []expr.Any {
	b := a.As4()
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: b[:]},
		&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(port)},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
	}
}

func jump(chain string) expr.Any { return &expr.Verdict{Kind: expr.VerdictJump, Chain: chain} }

func ret() expr.Any { return &expr.Verdict{Kind: expr.VerdictReturn} }

func cat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
