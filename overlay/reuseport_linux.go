package overlay

import (
	"fmt"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// MaxSpread bounds the sockets of one SO_REUSEPORT group SpreadByInnerFlow
// spreads over.
const MaxSpread = 256

// SpreadByInnerFlow makes the SO_REUSEPORT group c belongs to (Conns opened
// with ConnConfig.ReusePort on one address) hand each datagram to socket
// hash(inner flow) mod n, n being the number of sockets in the group, in
// the order they joined it. The kernel's own choice hashes the outer
// addresses and ports, which are the same for every datagram from one peer
// (weft sends from the VXLAN port), so without this all of a peer's traffic
// lands on one socket. One inner TCP or UDP flow always lands on the same
// socket: its frames keep their order.
//
// The classic BPF program sees the UDP payload: the VXLAN header at 0, the
// inner Ethernet header at 8, inner IPv4 at 22 (addresses at 34 and 38,
// ports at 42 with a 20-byte header). It mixes the addresses and ports with
// a multiplicative hash: Linux picks connect() ports of one parity, so the
// low bits of the ports alone do not spread. A frame too short for the
// loads (ARP) goes to socket 0, as BPF returns 0 on an out-of-range load.
func SpreadByInnerFlow(c *Conn, n int) error {
	if n < 1 || n > MaxSpread {
		return fmt.Errorf("spread by inner flow: %d sockets outside [1, %d]", n, MaxSpread)
	}
	prog, err := bpf.Assemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: 34, Size: 4}, // inner source address
		bpf.TAX{},
		bpf.LoadAbsolute{Off: 38, Size: 4}, // inner destination address
		bpf.ALUOpX{Op: bpf.ALUOpXor},
		bpf.TAX{},
		bpf.LoadAbsolute{Off: 42, Size: 4}, // source and destination port
		bpf.ALUOpX{Op: bpf.ALUOpXor},
		bpf.ALUOpConstant{Op: bpf.ALUOpMul, Val: 0x9e3779b1}, // Fibonacci hashing: bit k of a product depends on bits 0..k of x, so use the top ones
		bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 22},
		bpf.ALUOpConstant{Op: bpf.ALUOpMod, Val: uint32(n)},
		bpf.RetA{},
	})
	if err != nil {
		return fmt.Errorf("spread by inner flow: %w", err)
	}
	filter := make([]unix.SockFilter, len(prog))
	for i, ins := range prog {
		filter[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	fprog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	var serr error
	if err := c.rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF, &fprog)
	}); err != nil {
		return fmt.Errorf("spread by inner flow: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("spread by inner flow: setsockopt SO_ATTACH_REUSEPORT_CBPF: %w", serr)
	}
	return nil
}
