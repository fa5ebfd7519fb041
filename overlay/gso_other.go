//go:build !linux

package overlay

import (
	"errors"
	"net/netip"
)

// UDP GSO/GRO are Linux socket options; elsewhere the constructors fail.

const (
	MaxGSOSegments = 64
	MaxGSOBytes    = 0xffff - 20 - 8
	MaxGROBytes    = 0xffff
)

var ErrGSOUnsupported = errors.New("overlay: UDP GSO/GRO not supported by this kernel")

type GSOWriter struct{}

func NewGSOWriter(*Conn, int) (*GSOWriter, error) { return nil, ErrGSOUnsupported }
func (*GSOWriter) Disabled() bool                 { return true }
func (*GSOWriter) WriteGSO([][]byte, []int, []netip.AddrPort) (int, error) {
	return 0, ErrGSOUnsupported
}

type GROReader struct{}

func NewGROReader(*Conn, int) (*GROReader, error) { return nil, ErrGSOUnsupported }
func (*GROReader) Truncated() uint64              { return 0 }
func (*GROReader) ReadBatch([][]byte, []int, []int, int, []netip.AddrPort) (int, error) {
	return 0, ErrGSOUnsupported
}
