package maglev

import (
	"errors"
	"testing"
)

func keysN(n, base int) []uint64 {
	k := make([]uint64, n)
	for i := range k {
		// 10.244.x.y:8080 packed as the service stage packs it.
		k[i] = uint64(0x0af40000+base+i)<<16 | 8080
	}
	return k
}

func TestCheckSize(t *testing.T) {
	for _, tc := range []struct {
		m  int
		ok bool
	}{
		{7, true}, {251, true}, {16381, true}, {65521, true}, {131071, true},
		{0, false}, {6, false}, {16383, false}, {65536, false}, {131073, false}, {-7, false},
	} {
		err := CheckSize(tc.m)
		if (err == nil) != tc.ok {
			t.Errorf("CheckSize(%d) = %v, want ok=%v", tc.m, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrSize) {
			t.Errorf("CheckSize(%d) = %v, want ErrSize", tc.m, err)
		}
	}
}

func TestBuildErrors(t *testing.T) {
	if _, err := Build(nil, DefaultSize); !errors.Is(err, ErrNoBackends) {
		t.Errorf("no backends: %v", err)
	}
	if _, err := Build(keysN(7, 0), 7); err == nil {
		t.Error("7 backends in 7 slots: no error")
	}
	if _, err := Build(keysN(3, 0), 100); !errors.Is(err, ErrSize) {
		t.Errorf("size 100: %v", err)
	}
}

// Every slot is filled, and every backend owns close to m/n slots (the
// Maglev fill gives each backend floor or ceil of m/n, bar the last round).
func TestBuildEven(t *testing.T) {
	for _, tc := range []struct{ n, m int }{{1, 7}, {3, 251}, {10, 16381}, {100, 16381}, {1000, 65521}} {
		tab, err := Build(keysN(tc.n, 0), tc.m)
		if err != nil {
			t.Fatal(err)
		}
		own := make([]int, tc.n)
		for _, b := range tab {
			if int(b) >= tc.n {
				t.Fatalf("n=%d m=%d: slot holds %d", tc.n, tc.m, b)
			}
			own[b]++
		}
		lo, hi := tc.m/tc.n, (tc.m+tc.n-1)/tc.n
		for i, c := range own {
			if c < lo || c > hi {
				t.Errorf("n=%d m=%d: backend %d owns %d slots, want %d..%d", tc.n, tc.m, i, c, lo, hi)
			}
		}
	}
}

// Adding one backend to n moves about 1/(n+1) of the slots (plus a little:
// the paper measures a few percent over the ideal at m ~ 100n).
func TestBuildDisruption(t *testing.T) {
	for _, n := range []int{3, 10, 50} {
		before, err := Build(keysN(n, 0), DefaultSize)
		if err != nil {
			t.Fatal(err)
		}
		after, err := Build(keysN(n+1, 0), DefaultSize)
		if err != nil {
			t.Fatal(err)
		}
		moved := 0
		for i := range before {
			if before[i] != after[i] {
				moved++
			}
		}
		ideal := float64(DefaultSize) / float64(n+1)
		if f := float64(moved); f < ideal*0.9 || f > ideal*1.5 {
			t.Errorf("n=%d -> %d: %d slots moved, ideal %.0f", n, n+1, moved, ideal)
		}
	}
}

// The table depends only on the keys and the size: every node and every
// restart agrees.
func TestBuildDeterministic(t *testing.T) {
	a, _ := Build(keysN(20, 5), 251)
	b, _ := Build(keysN(20, 5), 251)
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("slot %d: %d then %d", i, a[i], b[i])
		}
	}
}

func BenchmarkBuild(b *testing.B) {
	keys := keysN(100, 0)
	for b.Loop() {
		if _, err := Build(keys, DefaultSize); err != nil {
			b.Fatal(err)
		}
	}
}
