package policy

// Verdict is a Decision packed into the 32 bits a conntrack entry keeps
// for policy: 0 means "not decided yet"; otherwise bit 31 is set, bit 30
// says allowed, and bits 0-29 hold the snapshot generation modulo 2^30.
// The rule that allowed a flow is not kept: `weft trace` and the metrics
// ask the current snapshot again (Decide, Explain), which is cheap.
//
// A generation that comes round again after 2^30 policy updates would make
// a flow last checked that long ago look current; at one update a second
// that is 34 years, longer than any timeout keeps an entry.
type Verdict uint32

const (
	verdictSet     Verdict = 1 << 31
	verdictAllowed Verdict = 1 << 30
	verdictGenMask Verdict = verdictAllowed - 1
)

// Verdict packs d for conntrack.
func (d Decision) Verdict() Verdict {
	v := verdictSet | Verdict(d.Gen)&verdictGenMask
	if d.Allowed {
		v |= verdictAllowed
	}
	return v
}

// Allowed reports whether the packed decision allowed the flow.
func (v Verdict) Allowed() bool { return v&(verdictSet|verdictAllowed) == verdictSet|verdictAllowed }

// Current reports whether v was taken under s's generation: if not, the
// flow must be re-checked (RecheckVerdict) before its packet passes.
func (s *Snapshot) Current(v Verdict) bool {
	return v&verdictSet != 0 && v&verdictGenMask == Verdict(s.gen)&verdictGenMask
}

// RecheckVerdict is Recheck for a packed verdict: called with the flow's
// original tuple (post-NAT: client -> backend pod) when !s.Current(v), on
// a packet of either direction. It returns the new verdict to store and
// whether the flow went from allowed to denied or back. weft cuts a flow
// that is no longer allowed: the caller drops the packet (and every later
// one) rather than letting the connection finish, as Cilium does (policy
// is consulted for established flows; cilium/cilium#2700) and unlike
// Calico's iptables mode, which accepts ESTABLISHED before policy. The
// API leaves this to implementations (kubernetes/website#43438).
func (s *Snapshot) RecheckVerdict(f Flow, check Check, v Verdict) (Verdict, bool) {
	if s.Current(v) {
		return v, false
	}
	d := s.Decide(f, check)
	nv := d.Verdict()
	return nv, v.Allowed() != nv.Allowed()
}
