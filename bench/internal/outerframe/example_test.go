package outerframe_test

import (
	"fmt"

	"github.com/weftnet/weft/bench/internal/outerframe"
	"github.com/weftnet/weft/overlay"
	"github.com/weftnet/weft/packet"
)

// A worker's send side with the full outer frame: the inner frame was read
// at offset OuterIPv4Len, so the headers go in front of it without a copy.
func ExampleEncapIPv4() {
	inner := 64
	buf := make([]byte, overlay.OuterIPv4Len+inner)
	off := overlay.OuterIPv4Len
	packet.PutEth(buf[off:], packet.MAC{2, 0, 0, 0, 2, 1}, packet.MAC{2, 0, 0, 0, 1, 1}, packet.EtherTypeARP)

	h := &outerframe.OuterIPv4{
		SrcMAC: packet.MAC{2, 0xaa, 0, 0, 0, 1}, DstMAC: packet.MAC{2, 0xaa, 0, 0, 0, 2},
		Src: [4]byte{10, 99, 0, 1}, Dst: [4]byte{10, 99, 0, 2},
		VNI: 1,
	}
	start, err := outerframe.EncapIPv4(buf, off, inner, h)
	if err != nil {
		panic(err)
	}
	frame := buf[start:]
	ip := packet.IPv4(frame[packet.EthHdrLen:])
	fmt.Println(len(frame), ip.TotalLen(), ip.DF(), ip.HeaderChecksumOK())
	// Output: 114 100 true true
}
