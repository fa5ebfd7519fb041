package packet

import "testing"

func TestICMPIsInformational(t *testing.T) {
	tests := []struct {
		typ  uint8
		want bool
	}{
		{ICMPEchoReply, true},
		{ICMPEchoRequest, true},
		{ICMPTimestamp, true},
		{ICMPAddrMaskReply, true},
		{ICMPDestUnreachable, false},
		{ICMPTimeExceeded, false},
		{ICMPRedirect, false},
		{ICMPParamProblem, false},
		{ICMPSourceQuench, false},
		{200, false}, // unknown types count as errors: never answered
	}
	for _, tc := range tests {
		if got := ICMPIsInformational(tc.typ); got != tc.want {
			t.Errorf("type %d: %v want %v", tc.typ, got, tc.want)
		}
	}
}

func TestSetICMPChecksum(t *testing.T) {
	for n := 0; n <= 65; n++ {
		b := make([]byte, ICMPHdrLen+n)
		PutICMPHeader(b, ICMPDestUnreachable, ICMPCodeFragNeeded, 1450)
		for i := range n {
			b[ICMPHdrLen+i] = byte(i*7 + 3)
		}
		SetICMPChecksum(b)
		if refChecksum(b) != 0xffff {
			t.Fatalf("len %d: message does not verify: % x", len(b), b)
		}
		if b[ICMPOffMTU] != 1450>>8 || b[ICMPOffMTU+1] != 1450&0xff || b[ICMPOffRest] != 0 {
			t.Fatalf("rest of header % x", b[4:8])
		}
	}
}
