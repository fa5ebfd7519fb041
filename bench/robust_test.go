package bench

import (
	"bytes"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// accounted checks that every replayed frame met exactly one fate: a
// verdict, or a refusal by decapsulation.
func accounted(t *testing.T, st Stats) {
	t.Helper()
	var n uint64
	for _, c := range st.Verdicts() {
		n += c
	}
	n += st.DecapDropped() + st.OtherVerdicts + st.DeviceDrops + st.PartialDrops
	if n != st.Frames {
		t.Errorf("%d frames replayed, %d verdicts and decap drops", st.Frames, n)
	}
	if st.OtherVerdicts != 0 || st.EncapErrors != 0 || st.PortGone != 0 {
		t.Errorf("%d unknown verdicts, %d encap errors, %d deliveries to missing ports", st.OtherVerdicts, st.EncapErrors, st.PortGone)
	}
}

// mangled returns n frames of garbage for the replay: random bytes of
// random length, and frames of the mix truncated or with random bytes
// changed, which keep enough of their headers to get deep into the
// pipeline (decap, routing, answers built in place).
func mangled(mix [][]byte, seed uint64, n int) [][]byte {
	g := &gen{rnd: seed}
	out := make([][]byte, 0, n)
	for i := range n {
		src := mix[g.intn(len(mix))]
		var f []byte
		switch i % 4 {
		case 0:
			f = make([]byte, g.intn(300))
			for j := range f {
				f[j] = byte(g.next())
			}
		case 1:
			f = append([]byte(nil), src[:g.intn(len(src)+1)]...)
		case 2:
			f = append([]byte(nil), src...)
			for range 1 + g.intn(4) {
				f[g.intn(len(f))] = byte(g.next())
			}
		case 3:
			f = append([]byte(nil), src...)
			f[g.intn(min(len(f), 100))] ^= byte(1 << g.intn(8))
		}
		out = append(out, f)
	}
	return out
}

// TestReplayRobustness replays a pcap of random, truncated and corrupted
// frames: no panic, and every frame accounted for.
func TestReplayRobustness(t *testing.T) {
	mix := loadTestdata(t, "mix")
	frames := mangled(mix, 7, 4000)
	frames = append(frames, nil, make([]byte, MaxFrameLen+1), make([]byte, MaxFrameLen))
	path := filepath.Join(t.TempDir(), "garbage.pcap")
	if err := WritePcapFile(path, frames); err != nil {
		t.Fatal(err)
	}
	c, err := LoadPcap(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Skipped != 1 || len(c.Frames) != len(frames)-1 {
		t.Fatalf("loaded %d frames, skipped %d; want %d and 1", len(c.Frames), c.Skipped, len(frames)-1)
	}
	for _, routes := range []int{4, 5000} {
		r, err := NewReplayer(DefaultTopology().WithRoutes(routes), c.Frames)
		if err != nil {
			t.Fatal(err)
		}
		r.Warm()
		r.Pass()
		r.Pass()
		st := r.Stats()
		if st.Frames != 2*uint64(len(c.Frames)) {
			t.Errorf("routes=%d: %d frames in 2 passes, want %d", routes, st.Frames, 2*len(c.Frames))
		}
		accounted(t, st)
	}
}

// FuzzReplayFrames replays whatever frames the input splits into (at
// "|||"), twice, through a long-lived replayer.
func FuzzReplayFrames(f *testing.F) {
	topo := DefaultTopology()
	gen := Mix(topo, DefaultMix)
	seen := map[Class]bool{}
	for _, fr := range gen {
		if !seen[fr.Class] {
			seen[fr.Class] = true
			f.Add(fr.Data)
		}
	}
	f.Add(bytes.Join([][]byte{gen[0].Data, gen[1].Data, gen[2].Data}, []byte("|||")))
	r, err := NewReplayer(topo, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r.setFrames(bytes.Split(data, []byte("|||")))
		r.Pass()
		r.Pass()
		accounted(t, r.Stats())
	})
}

func TestReadPcapFormats(t *testing.T) {
	frames := Datas(Mix(DefaultTopology(), DefaultMix))[:50]
	classic := func(link layers.LinkType, capLen func(i int) int) []byte {
		var b bytes.Buffer
		w := pcapgo.NewWriter(&b)
		if err := w.WriteFileHeader(65535, link); err != nil {
			t.Fatal(err)
		}
		for i, f := range frames {
			n := capLen(i)
			ci := gopacket.CaptureInfo{Timestamp: time.Unix(0, 0), CaptureLength: n, Length: len(f)}
			if err := w.WritePacket(ci, f[:n]); err != nil {
				t.Fatal(err)
			}
		}
		return b.Bytes()
	}
	full := func(i int) int { return len(frames[i]) }
	ng := func() []byte {
		var b bytes.Buffer
		w, err := pcapgo.NewNgWriter(&b, layers.LinkTypeEthernet)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range frames {
			ci := gopacket.CaptureInfo{Timestamp: time.Unix(0, 0), CaptureLength: len(f), Length: len(f), InterfaceIndex: 0}
			if err := w.WritePacket(ci, f); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	tests := []struct {
		name          string
		data          []byte
		wantErr       bool
		wantFrames    int
		wantTruncated int
	}{
		{"classic", classic(layers.LinkTypeEthernet, full), false, len(frames), 0},
		{"pcapng", ng(), false, len(frames), 0},
		{"snaplen 60", classic(layers.LinkTypeEthernet, func(i int) int { return min(60, len(frames[i])) }), false, len(frames), -1},
		{"linux cooked", classic(layers.LinkTypeLinuxSLL, full), true, 0, 0},
		{"empty", nil, true, 0, 0},
		{"garbage", []byte("this is not a capture file at all"), true, 0, 0},
		{"header only", classic(layers.LinkTypeEthernet, full)[:24], false, 0, 0},
		{"cut mid-frame", classic(layers.LinkTypeEthernet, full)[:24+16+30], true, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ReadPcap(bytes.NewReader(tc.data))
			if tc.wantErr {
				if err == nil {
					t.Fatalf("no error; %d frames", len(c.Frames))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(c.Frames) != tc.wantFrames {
				t.Errorf("%d frames, want %d", len(c.Frames), tc.wantFrames)
			}
			if tc.wantTruncated < 0 {
				tc.wantTruncated = 0
				for _, f := range frames {
					if len(f) > 60 {
						tc.wantTruncated++
					}
				}
			}
			if c.Truncated != tc.wantTruncated {
				t.Errorf("%d truncated, want %d", c.Truncated, tc.wantTruncated)
			}
			for i := range min(len(c.Frames), len(frames)) {
				if c.Truncated == 0 && !bytes.Equal(c.Frames[i], frames[i]) {
					t.Fatalf("frame %d differs", i)
				}
			}
		})
	}
}
