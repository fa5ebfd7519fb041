// Package backend holds what the registry backends share but callers of
// the registry never need: subnet search, holder tokens, retry pacing.
package backend

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"net/netip"
	"time"
)

// SubnetSource is registry.SubnetSource, restated so that the registry
// package itself may import this one.
type SubnetSource interface {
	Count() int
	Nth(i int) (netip.Prefix, error)
}

// FirstFree returns the first subnet of src, in pool order, that claimed
// does not contain; ok is false when there is none.
func FirstFree(src SubnetSource, claimed map[netip.Prefix]bool) (p netip.Prefix, ok bool, err error) {
	if src == nil {
		return netip.Prefix{}, false, fmt.Errorf("no subnet pool configured (Options.Subnets is nil)")
	}
	n := src.Count()
	for i := range n {
		p, err := src.Nth(i)
		if err != nil {
			return netip.Prefix{}, false, fmt.Errorf("subnet pool entry %d of %d: %w", i, n, err)
		}
		if !claimed[p] {
			return p, true, nil
		}
	}
	return netip.Prefix{}, false, nil
}

// NewToken returns a random identifier for one acquisition, so a client can
// tell its own lease from one another client wrote over it.
func NewToken() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // never fails on Linux
	return hex.EncodeToString(b[:])
}

// Backoff paces retries: exponential from Min to Max, with ±20% jitter so
// clients that failed together do not retry together.
type Backoff struct {
	Min, Max time.Duration
	cur      time.Duration
}

// Next returns the wait before the next attempt.
func (b *Backoff) Next() time.Duration {
	switch {
	case b.cur == 0:
		b.cur = b.Min
	case b.cur < b.Max:
		b.cur = min(2*b.cur, b.Max)
	}
	jitter := 0.8 + 0.4*mrand.Float64()
	return time.Duration(float64(b.cur) * jitter)
}

// Wait waits out Next; false if ctx ended first.
func (b *Backoff) Wait(ctx context.Context) bool {
	t := time.NewTimer(b.Next())
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Reset starts the next failure streak at Min again.
func (b *Backoff) Reset() { b.cur = 0 }
