package conntrack

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

const sec = int64(time.Second)

func newTable(t testing.TB, cfg Config) *Table {
	t.Helper()
	tab, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

// A client 10.244.1.3:40000 to the cluster IP 10.96.0.10:80, DNATed to
// 10.244.2.7:8080.
var (
	origT  = Tuple{Src: 0x0af40103, Dst: 0x0a60000a, SrcPort: 40000, DstPort: 80, Proto: ProtoTCP}
	replyT = Tuple{Src: 0x0af40207, Dst: 0x0af40103, SrcPort: 8080, DstPort: 40000, Proto: ProtoTCP}
)

func TestNewValidates(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"too small", Config{Size: 3}},
		{"too big", Config{Size: MaxSize + 1}},
		{"tiny timeout", Config{UDPAssured: time.Millisecond}},
		{"negative timeout", Config{TCPFin: -time.Second}},
	} {
		if _, err := New(tc.cfg); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
	tab := newTable(t, Config{})
	if c := tab.Config(); c.Size != DefaultSize || c.UDPUnreplied != 30*time.Second || c.UDPAssured != 120*time.Second {
		t.Fatalf("defaults: %+v", c)
	}
}

// Both directions find the flow; each sees the other's tuple.
func TestInsertLookupBothDirections(t *testing.T) {
	tab := newTable(t, Config{Size: 64})
	var h Hit
	if tab.Lookup(&origT, FlagSYN, 0, &h) {
		t.Fatal("found before insert")
	}
	if err := tab.Insert(&origT, &replyT, 7, 0, FlagSYN, 0, &h); err != nil {
		t.Fatal(err)
	}
	if h.Dir != DirOriginal || h.Other != replyT || h.Service != 7 || h.State != StateSynSent {
		t.Fatalf("insert hit %+v", h)
	}
	if !tab.Lookup(&origT, FlagSYN, sec, &h) || h.Dir != DirOriginal || h.Other != replyT {
		t.Fatalf("original lookup %+v", h)
	}
	if !tab.Lookup(&replyT, FlagSYN|FlagACK, sec, &h) || h.Dir != DirReply || h.Other != origT || h.State != StateSynRecv {
		t.Fatalf("reply lookup %+v", h)
	}
	rev := origT.Reverse()
	if tab.Lookup(&rev, 0, sec, &h) {
		t.Fatal("the reverse of the original tuple is not a tuple of the flow (NAT)")
	}
	if tab.Len() != 1 || tab.Stats().Inserts != 1 {
		t.Fatalf("len %d stats %+v", tab.Len(), tab.Stats())
	}
	// A second insert of the same flow (another worker's race) returns it.
	if err := tab.Insert(&origT, &replyT, 9, 0, FlagSYN, sec, &h); err != nil || h.Service != 7 {
		t.Fatalf("second insert: %v %+v", err, h)
	}
	// Another flow whose reply tuple would collide is refused.
	o2 := origT
	o2.Dst = 0x0a60000b
	if err := tab.Insert(&o2, &replyT, 1, 0, FlagSYN, sec, &h); !errors.Is(err, ErrClash) {
		t.Fatalf("clash: %v", err)
	}
}

func TestTCPStates(t *testing.T) {
	type pkt struct {
		dir   Dir
		flags uint8
		want  State
	}
	o, r := DirOriginal, DirReply
	tests := []struct {
		name  string
		first uint8
		pkts  []pkt
	}{
		{"handshake", FlagSYN, []pkt{{r, FlagSYN | FlagACK, StateSynRecv}, {o, FlagACK, StateEstablished}, {r, FlagACK, StateEstablished}}},
		{"close both", FlagSYN, []pkt{{r, FlagSYN | FlagACK, StateSynRecv}, {o, FlagACK, StateEstablished},
			{o, FlagFIN | FlagACK, StateFinWait}, {r, FlagACK, StateFinWait}, {r, FlagFIN | FlagACK, StateTimeWait}}},
		{"reset", FlagSYN, []pkt{{r, FlagRST | FlagACK, StateClose}}},
		{"pickup mid-stream", FlagACK, []pkt{{r, FlagACK, StateEstablished}}},
		{"reopen after close", FlagSYN, []pkt{{r, FlagRST, StateClose}, {o, FlagSYN, StateSynSent}}},
		{"reply SYN-ACK twice", FlagSYN, []pkt{{r, FlagSYN | FlagACK, StateSynRecv}, {r, FlagSYN | FlagACK, StateSynRecv}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tab := newTable(t, Config{Size: 16})
			var h Hit
			if err := tab.Insert(&origT, &replyT, 1, 0, tc.first, 0, &h); err != nil {
				t.Fatal(err)
			}
			for i, p := range tc.pkts {
				k := origT
				if p.dir == DirReply {
					k = replyT
				}
				if !tab.Lookup(&k, p.flags, int64(i+1), &h) {
					t.Fatalf("packet %d: not found", i)
				}
				if h.State != p.want {
					t.Fatalf("packet %d (%#x): state %s, want %s", i, p.flags, h.State, p.want)
				}
			}
		})
	}
}

func TestTimeouts(t *testing.T) {
	cfg := Config{Size: 16}
	cfg.setDefaults()
	udpO := Tuple{Src: 1, Dst: 2, SrcPort: 3, DstPort: 53, Proto: ProtoUDP}
	udpR := Tuple{Src: 5, Dst: 1, SrcPort: 53, DstPort: 3, Proto: ProtoUDP}
	tests := []struct {
		name    string
		orig    Tuple
		reply   Tuple
		first   uint8
		replied bool
		live    time.Duration
	}{
		{"udp unreplied", udpO, udpR, 0, false, cfg.UDPUnreplied},
		{"udp assured", udpO, udpR, 0, true, cfg.UDPAssured},
		{"tcp syn", origT, replyT, FlagSYN, false, cfg.TCPSyn},
		{"tcp established", origT, replyT, FlagACK, true, cfg.TCPEstablished},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tab := newTable(t, cfg)
			var h Hit
			if err := tab.Insert(&tc.orig, &tc.reply, 0, 0, tc.first, 0, &h); err != nil {
				t.Fatal(err)
			}
			if tc.replied {
				flags := tc.first
				if flags == FlagSYN {
					flags = FlagSYN | FlagACK
				}
				tab.Lookup(&tc.reply, flags&^FlagSYN, 0, &h)
			}
			// Alive up to the timeout, gone after; Expire reclaims it.
			if !tab.Peek(&tc.orig, int64(tc.live), &h) {
				t.Fatal("expired at its timeout")
			}
			if n := tab.Expire(int64(tc.live)); n != 0 {
				t.Fatalf("Expire at the timeout removed %d", n)
			}
			if tab.Peek(&tc.orig, int64(tc.live)+1, &h) {
				t.Fatal("alive after its timeout")
			}
			if n := tab.Expire(int64(tc.live) + 1); n != 1 || tab.Len() != 0 || tab.Stats().Expired != 1 {
				t.Fatalf("Expire removed %d, len %d", n, tab.Len())
			}
		})
	}
}

// Packets refresh a flow at most once a second, and the refresh keeps it.
func TestRefresh(t *testing.T) {
	tab := newTable(t, Config{Size: 16, UDPUnreplied: 2 * time.Second})
	o := Tuple{Src: 1, Dst: 2, SrcPort: 3, DstPort: 4, Proto: ProtoUDP}
	r := o.Reverse()
	var h Hit
	if err := tab.Insert(&o, &r, 0, 0, 0, 0, &h); err != nil {
		t.Fatal(err)
	}
	for now := int64(0); now <= 10*sec; now += sec / 2 {
		if !tab.Lookup(&o, 0, now, &h) {
			t.Fatalf("lost at %v", time.Duration(now))
		}
	}
	if tab.Expire(11*sec) != 0 {
		t.Fatal("expired despite traffic")
	}
}

// A full table refuses inserts (counted) and never grows; an expired flow
// in the way is replaced.
func TestFull(t *testing.T) {
	tab := newTable(t, Config{Size: 16})
	var h Hit
	for i := range 16 {
		o := Tuple{Src: 1, Dst: 2, SrcPort: uint16(i + 1), DstPort: 80, Proto: ProtoUDP}
		r := o.Reverse()
		if err := tab.Insert(&o, &r, 0, 0, 0, 0, &h); err != nil {
			t.Fatalf("insert %d: %v", i, err)
		}
	}
	o := Tuple{Src: 1, Dst: 2, SrcPort: 999, DstPort: 80, Proto: ProtoUDP}
	r := o.Reverse()
	if err := tab.Insert(&o, &r, 0, 0, 0, 0, &h); !errors.Is(err, ErrFull) {
		t.Fatalf("17th insert: %v", err)
	}
	if s := tab.Stats(); s.Full != 1 || s.Entries != 16 {
		t.Fatalf("stats %+v", s)
	}
	// After the unreplied timeout, Expire makes room.
	if n := tab.Expire(int64(DefaultUDPUnreplied) + 1); n != 16 {
		t.Fatalf("expired %d", n)
	}
	if err := tab.Insert(&o, &r, 0, 0, 0, int64(DefaultUDPUnreplied)+1, &h); err != nil {
		t.Fatal(err)
	}
	// Insert over an expired flow with the same tuple replaces it.
	later := int64(DefaultUDPUnreplied)*2 + 2
	if err := tab.Insert(&o, &r, 5, 0, 0, later, &h); err != nil || h.Service != 5 {
		t.Fatalf("replace: %v %+v", err, h)
	}
	if tab.Stats().Replaced != 1 {
		t.Fatalf("stats %+v", tab.Stats())
	}
}

func TestListFlush(t *testing.T) {
	tab := newTable(t, Config{Size: 64})
	var h Hit
	for i := range 10 {
		o := Tuple{Src: 1, Dst: 2, SrcPort: uint16(i + 1), DstPort: uint16(80 + i%2), Proto: ProtoTCP}
		r := o.Reverse()
		if err := tab.Insert(&o, &r, uint32(i%2+1), 0, FlagSYN, int64(i), &h); err != nil {
			t.Fatal(err)
		}
	}
	all := tab.List(nil, 0)
	if len(all) != 10 {
		t.Fatalf("listed %d", len(all))
	}
	if l := tab.List(nil, 3); len(l) != 3 {
		t.Fatalf("limit 3: %d", len(l))
	}
	port81 := tab.List(func(e *Entry) bool { return e.Orig.DstPort == 81 }, 0)
	if len(port81) != 5 || port81[0].State != StateSynSent || port81[0].Expires != port81[0].LastSeen+int64(DefaultTCPSyn) {
		t.Fatalf("port 81: %+v", port81)
	}
	if n := tab.FlushIf(func(e *Entry) bool { return e.Service == 1 }); n != 5 {
		t.Fatalf("flushed %d", n)
	}
	if n := tab.Flush(); n != 5 || tab.Len() != 0 || tab.Stats().Flushed != 10 {
		t.Fatalf("flush all: %d, len %d, %+v", n, tab.Len(), tab.Stats())
	}
	for _, e := range all {
		if tab.Peek(&e.Orig, 10, &h) || tab.Peek(&e.Reply, 10, &h) {
			t.Fatalf("%v still found after flush", e.Orig)
		}
	}
}

// Workers look up and insert while the control plane expires and
// flushes; run with -race. Every lookup that finds a flow must return that
// flow's own other tuple (never another flow's).
func TestConcurrent(t *testing.T) {
	tab := newTable(t, Config{Size: 1024})
	const flows = 2000
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var h Hit
			for i := range 20000 {
				f := uint16((i*7 + w) % flows)
				o := Tuple{Src: 1, Dst: 2, SrcPort: f, DstPort: 80, Proto: ProtoUDP}
				r := Tuple{Src: 3, Dst: 1, SrcPort: 8080, DstPort: f, Proto: ProtoUDP}
				if tab.Lookup(&o, 0, int64(i), &h) {
					if h.Dir != DirOriginal || h.Other != r {
						t.Errorf("flow %d: hit %+v", f, h)
						return
					}
				} else if err := tab.Insert(&o, &r, 1, 0, 0, int64(i), &h); err != nil && !errors.Is(err, ErrFull) {
					t.Errorf("insert: %v", err)
					return
				}
				if tab.Lookup(&r, 0, int64(i), &h) && (h.Dir != DirReply || h.Other != o) {
					t.Errorf("flow %d reply: hit %+v", f, h)
					return
				}
			}
		}()
	}
	var ctl sync.WaitGroup
	ctl.Add(1)
	go func() {
		defer ctl.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if i%2 == 0 {
				tab.FlushIf(func(e *Entry) bool { return e.Orig.SrcPort%3 == 0 })
			} else {
				tab.Expire(int64(time.Hour))
			}
		}
	}()
	wg.Wait()
	close(stop)
	ctl.Wait()
}

func TestLookupAllocs(t *testing.T) {
	tab := newTable(t, Config{Size: 1024})
	var h Hit
	if err := tab.Insert(&origT, &replyT, 1, 0, FlagSYN, 0, &h); err != nil {
		t.Fatal(err)
	}
	miss := origT
	miss.SrcPort++
	n := testing.AllocsPerRun(1000, func() {
		tab.Lookup(&origT, FlagACK, 1, &h)
		tab.Lookup(&replyT, FlagACK, 1, &h)
		tab.Lookup(&miss, FlagACK, 1, &h)
	})
	if n != 0 {
		t.Fatalf("%v allocs per lookup", n)
	}
}

func BenchmarkLookup(b *testing.B) {
	for _, n := range []int{1000, 100_000, 1_000_000} {
		tab := newTable(b, Config{Size: n + n/4})
		var h Hit
		keys := make([]Tuple, n)
		for i := range n {
			o := Tuple{Src: uint32(i), Dst: 0x0a60000a, SrcPort: uint16(i), DstPort: 80, Proto: ProtoTCP}
			r := Tuple{Src: 0x0af40207, Dst: uint32(i), SrcPort: 8080, DstPort: uint16(i), Proto: ProtoTCP}
			if err := tab.Insert(&o, &r, 1, 0, FlagACK, 0, &h); err != nil {
				b.Fatal(err)
			}
			keys[i] = o
		}
		b.Run(fmt.Sprintf("%d/hot", n), func(b *testing.B) {
			for b.Loop() {
				tab.Lookup(&keys[7], FlagACK, 1, &h)
			}
		})
		b.Run(fmt.Sprintf("%d/random", n), func(b *testing.B) {
			r := rand.New(rand.NewPCG(1, 2))
			idx := make([]int, 4096)
			for i := range idx {
				idx[i] = r.IntN(n)
			}
			i := 0
			for b.Loop() {
				tab.Lookup(&keys[idx[i&4095]], FlagACK, 1, &h)
				i++
			}
		})
	}
}

func TestSetVerdict(t *testing.T) {
	tab, err := New(Config{Size: 64})
	if err != nil {
		t.Fatal(err)
	}
	orig := Tuple{Src: 0x0a000001, Dst: 0x0a000002, SrcPort: 1000, DstPort: 80, Proto: 6}
	reply := orig.Reverse()
	var h Hit
	if err := tab.Insert(&orig, &reply, 7, 0, 0x02, 1, &h); err != nil {
		t.Fatal(err)
	}
	if !tab.SetVerdict(&orig, &h, 0xc0000005) || h.Verdict != 0xc0000005 {
		t.Fatalf("SetVerdict on the flow's own record failed (hit %+v)", h)
	}
	var got Hit
	if !tab.Lookup(&reply, 0x12, 2, &got) || got.Verdict != 0xc0000005 || got.Service != 7 {
		t.Fatalf("lookup after SetVerdict: %+v, want verdict 0xc0000005 and service 7 kept", got)
	}
	other := Tuple{Src: 0x0a000009, Dst: 0x0a000002, SrcPort: 1000, DstPort: 80, Proto: 6}
	if tab.SetVerdict(&other, &h, 1) {
		t.Fatal("SetVerdict with another flow's tuple changed the record")
	}
	tab.Flush()
	if tab.SetVerdict(&orig, &h, 1) {
		t.Fatal("SetVerdict on a freed record")
	}
}
