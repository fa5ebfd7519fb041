//go:build !linux

package overlay

import (
	"context"
	"errors"
	"net/netip"
	"time"
)

// The batched underlay socket is Linux-only (recvmmsg/sendmmsg). This stub
// keeps the package building elsewhere; every call fails.

const (
	DefaultBatchSize    = 64
	MaxBatchSize        = 1024
	DefaultSocketBuffer = 7 << 20
)

var (
	ErrOffloadNotImplemented = errors.New("overlay: UDP GSO/GRO not implemented yet")
	errNoConn                = errors.New("overlay: Conn needs Linux")
)

type ConnConfig struct {
	Addr         netip.AddrPort
	BatchSize    int
	SocketBuffer int
	ReusePort    bool
	GSO, GRO     bool
}

type Conn struct{}

func ListenConn(context.Context, ConnConfig) (*Conn, error) { return nil, errNoConn }

func (*Conn) LocalAddr() netip.AddrPort        { return netip.AddrPort{} }
func (*Conn) BatchSize() int                   { return 0 }
func (*Conn) SocketBuffers() (int, int, error) { return 0, 0, errNoConn }
func (*Conn) Truncated() uint64                { return 0 }
func (*Conn) SetReadDeadline(time.Time) error  { return errNoConn }
func (*Conn) SetWriteDeadline(time.Time) error { return errNoConn }
func (*Conn) Close() error                     { return errNoConn }
func (*Conn) ReadBatch([][]byte, []int, int, []netip.AddrPort) (int, error) {
	return 0, errNoConn
}
func (*Conn) WriteBatch([][]byte, int, []netip.AddrPort) (int, error) { return 0, errNoConn }

const MaxSpread = 256

func SpreadByInnerFlow(*Conn, int) error { return errNoConn }
