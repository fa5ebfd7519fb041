// Package maglev builds Maglev consistent-hashing lookup tables (Eisenbud
// et al., "Maglev: A Fast and Reliable Software Network Load Balancer",
// NSDI 2016, §3.4): a table of M slots, M prime, each holding a backend
// index, filled so that every backend owns about M/N slots and adding or
// removing one backend moves about 1/N of the slots. The service stage
// picks a new flow's backend as table[flowHash % M].
//
// Pure Go, deterministic: the same backend keys and size give the same
// table on every node and after every restart, so a flow re-picked after a
// weftd restart (conntrack is not persisted) lands on the same backend.
package maglev

import (
	"errors"
	"fmt"
)

// Table sizes. 16381 is Cilium's default (bpf.lbmaps, "maglev table
// size"); the paper recommends M > 100*N for a disruption close to 1/N.
const (
	DefaultSize = 16381
	MinSize     = 7
	MaxSize     = 131071 // the largest size Cilium accepts
	// MaxBackends bounds N: slots hold uint16 indices.
	MaxBackends = 1<<16 - 1
)

// Errors from Build.
var (
	ErrSize       = errors.New("maglev: table size must be a prime in 7..131071")
	ErrNoBackends = errors.New("maglev: no backends")
)

// IsPrime reports whether m is prime (trial division: m is at most MaxSize).
func IsPrime(m int) bool {
	if m < 2 {
		return false
	}
	for d := 2; d*d <= m; d++ {
		if m%d == 0 {
			return false
		}
	}
	return true
}

// CheckSize returns ErrSize unless m is a usable table size.
func CheckSize(m int) error {
	if m < MinSize || m > MaxSize || !IsPrime(m) {
		return fmt.Errorf("%w (got %d)", ErrSize, m)
	}
	return nil
}

// Build returns the lookup table of size m for backends identified by
// keys (for weft: the packed address and port of each backend; keys must
// be distinct). Slot values index keys. N must be below m.
func Build(keys []uint64, m int) ([]uint16, error) {
	if err := CheckSize(m); err != nil {
		return nil, err
	}
	n := len(keys)
	if n == 0 {
		return nil, ErrNoBackends
	}
	if n >= m || n > MaxBackends {
		return nil, fmt.Errorf("maglev: %d backends for a table of %d slots", n, m)
	}
	const empty = 0xffff
	table := make([]uint16, m)
	for i := range table {
		table[i] = empty
	}
	offset := make([]uint64, n)
	skip := make([]uint64, n)
	next := make([]uint64, n)
	for i, k := range keys {
		offset[i] = Mix(k^0x6a09e667f3bcc908) % uint64(m)
		skip[i] = Mix(k^0xbb67ae8584caa73b)%uint64(m-1) + 1
	}
	// Each backend in turn takes its next preferred free slot (its
	// permutation is offset + j*skip mod m, a full cycle since m is prime).
	filled := 0
	for {
		for i := range n {
			c := (offset[i] + next[i]*skip[i]) % uint64(m)
			for table[c] != empty {
				next[i]++
				c = (offset[i] + next[i]*skip[i]) % uint64(m)
			}
			table[c] = uint16(i)
			next[i]++
			filled++
			if filled == m {
				return table, nil
			}
		}
	}
}

// Mix is a 64-bit finaliser (SplitMix64's): a fixed, seedless bijection,
// so hashes agree across nodes and restarts.
func Mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
