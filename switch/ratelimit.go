package vswitch

import "sync/atomic"

// limiter is a token bucket in GCRA form (the "virtual scheduling"
// algorithm of ITU-T I.371): one atomic theoretical-arrival time instead of
// a token count plus a refill timestamp, so workers share it with a CAS and
// no lock. rate events per second, up to burst back to back.
type limiter struct {
	tat       atomic.Int64 // theoretical arrival time of the next event, ns
	interval  int64        // ns per event
	tolerance int64        // how far tat may run ahead of now: (burst-1)*interval
}

func newLimiter(rate, burst int) *limiter {
	iv := int64(1e9) / int64(rate)
	return &limiter{interval: iv, tolerance: int64(burst-1) * iv}
}

// allow reports whether an event at now conforms, and consumes it unless dry.
func (l *limiter) allow(now int64, dry bool) bool {
	for {
		old := l.tat.Load()
		tat := max(old, now)
		if tat-now > l.tolerance {
			return false
		}
		if dry || l.tat.CompareAndSwap(old, tat+l.interval) {
			return true
		}
	}
}
