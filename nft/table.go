package nft

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// DefaultName is the name of weftd's table (family ip).
const DefaultName = "weft"

// Chain names.
const (
	chainPrerouting  = "prerouting"
	chainOutput      = "output"
	chainPorts       = "ports"
	chainPostrouting = "postrouting"
	chainEgress      = "egress"
	chainForward     = "forward"
	chainInput       = "input"
)

// Rule comments: counters are read back by them.
const (
	commentMasq    = "weft: egress masquerade"
	commentHairpin = "weft: hairpin masquerade"
	commentOut     = "weft: pods to outside"
	commentIn      = "weft: outside to pods"
	commentPortPfx = "weft: hostport "
	commentNodePfx = "weft: nodeport "
	commentNodeMsq = "weft: nodeport masquerade"
	commentLoMsq   = "weft: loopback hostport masquerade"
	commentLoGuard = "weft: loopback from host port"
	maxComment     = 127 // udata holds at most 255; keep rules listable
)

// Options say which table to keep where.
type Options struct {
	// Name of the table (family ip); default DefaultName.
	Name string
	// NetnsPath is the network namespace to program; "" is the calling
	// process's (weftd runs in the node's namespace).
	NetnsPath string
}

// Table is weftd's nftables table in one network namespace. Its methods
// are safe for concurrent use.
type Table struct {
	mu     sync.Mutex
	conn   *nftables.Conn
	ns     *os.File // the namespace, held open; nil for the caller's own
	table  *nftables.Table
	chains map[string]*nftables.Chain
	rs     Ruleset // last applied
	live   bool    // Apply succeeded and Remove has not run since
}

// Open connects to the kernel's nftables in the given namespace. It does
// not touch any table: Apply writes weft's.
func Open(o Options) (*Table, error) {
	if o.Name == "" {
		o.Name = DefaultName
	}
	t := &Table{table: &nftables.Table{Name: o.Name, Family: nftables.TableFamilyIPv4}}
	var opts []nftables.ConnOption
	if o.NetnsPath != "" {
		f, err := os.Open(o.NetnsPath)
		if err != nil {
			return nil, fmt.Errorf("nftables: netns %s: %w", o.NetnsPath, err)
		}
		t.ns = f
		opts = append(opts, nftables.WithNetNSFd(int(f.Fd())))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		t.closeNS()
		return nil, fmt.Errorf("nftables: %w", err)
	}
	t.conn = c
	t.chains = t.chainSet()
	return t, nil
}

// Name is the table's name as `nft list table ip NAME` takes it.
func (t *Table) Name() string { return t.table.Name }

func (t *Table) closeNS() {
	if t.ns != nil {
		t.ns.Close()
		t.ns = nil
	}
}

// Close releases the namespace handle; the table stays in the kernel.
func (t *Table) Close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closeNS()
}

func (t *Table) chainSet() map[string]*nftables.Chain {
	nat := func(name string, hook *nftables.ChainHook, prio *nftables.ChainPriority) *nftables.Chain {
		return &nftables.Chain{Name: name, Table: t.table, Type: nftables.ChainTypeNAT, Hooknum: hook, Priority: prio}
	}
	accept := nftables.ChainPolicyAccept
	return map[string]*nftables.Chain{
		chainPrerouting:  nat(chainPrerouting, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest),
		chainOutput:      nat(chainOutput, nftables.ChainHookOutput, nftables.ChainPriorityNATDest),
		chainPostrouting: nat(chainPostrouting, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource),
		chainForward: {Name: chainForward, Table: t.table, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept},
		chainInput: {Name: chainInput, Table: t.table, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept},
		chainPorts:  {Name: chainPorts, Table: t.table},
		chainEgress: {Name: chainEgress, Table: t.table},
	}
}

// Apply writes the whole table as rs says, in one transaction: the table
// is created if missing, deleted and created again, so that whatever a
// previous weftd (or a person) left in it is gone and nothing outside it
// is touched. On error the kernel keeps what it had.
func (t *Table) Apply(rs Ruleset) error {
	if err := rs.check(); err != nil {
		return fmt.Errorf("nftables: table ip %s: %w", t.table.Name, err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.conn
	c.AddTable(t.table) // create-if-missing, so that the delete cannot fail
	c.DelTable(t.table)
	c.AddTable(t.table)
	for _, name := range []string{chainPorts, chainEgress, chainPrerouting, chainOutput, chainPostrouting, chainForward, chainInput} {
		c.AddChain(t.chains[name])
	}
	for _, r := range t.rules(rs) {
		c.AddRule(r)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: write table ip %s: %w", t.table.Name, explain(err))
	}
	t.rs = rs
	t.live = true
	return nil
}

// SetHostPorts rewrites the hostPort rules, keeping the node ports.
func (t *Table) SetHostPorts(hs []HostPort) error {
	if err := CheckHostPorts(nil, hs); err != nil {
		return fmt.Errorf("nftables: table ip %s: %w", t.table.Name, err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.setPorts(hs, t.rs.NodePorts)
}

// SetNodePorts rewrites the node port rules, keeping the hostPorts.
func (t *Table) SetNodePorts(nps []NodePort) error {
	if err := checkNodePorts(nps); err != nil {
		return fmt.Errorf("nftables: table ip %s: %w", t.table.Name, err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.setPorts(t.rs.HostPorts, nps)
}

// setPorts rewrites the ports chain alone (one transaction: flush it and
// fill it again), keeping the rest of the table and its counters. Caller
// holds mu.
func (t *Table) setPorts(hs []HostPort, nps []NodePort) error {
	if !t.live {
		return fmt.Errorf("nftables: table ip %s is not written (Apply first)", t.table.Name)
	}
	c := t.conn
	c.FlushChain(t.chains[chainPorts])
	for _, r := range t.portRules(hs, nps) {
		c.AddRule(r)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: write chain %s of table ip %s: %w", chainPorts, t.table.Name, explain(err))
	}
	t.rs.HostPorts, t.rs.NodePorts = hs, nps
	return nil
}

// Remove deletes the table (and with it every rule weftd wrote). A table
// already gone is fine.
func (t *Table) Remove() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.conn.AddTable(t.table)
	t.conn.DelTable(t.table)
	if err := t.conn.Flush(); err != nil {
		return fmt.Errorf("nftables: delete table ip %s: %w", t.table.Name, explain(err))
	}
	t.live = false
	return nil
}

// Exists reports whether the table is in the kernel.
func (t *Table) Exists() (bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, err := t.conn.ListTableOfFamily(t.table.Name, nftables.TableFamilyIPv4)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.ENOENT):
		return false, nil
	}
	return false, fmt.Errorf("nftables: list table ip %s: %w", t.table.Name, err)
}

// explain adds what an operator can do about the common failures.
func explain(err error) error {
	switch {
	case errors.Is(err, unix.EPERM):
		return fmt.Errorf("%w (weftd needs CAP_NET_ADMIN in the node's network namespace)", err)
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.EOPNOTSUPP):
		return fmt.Errorf("%w (the kernel lacks an nftables feature weft needs: nf_tables with nat, masq, fib and ct)", err)
	}
	return err
}

func comment(s string) []byte {
	if len(s) > maxComment {
		s = s[:maxComment]
	}
	return userdata.AppendString(nil, userdata.TypeComment, s)
}

func (t *Table) rule(chain, cmt string, es []expr.Any) *nftables.Rule {
	r := &nftables.Rule{Table: t.table, Chain: t.chains[chain], Exprs: es}
	if cmt != "" {
		r.UserData = comment(cmt)
	}
	return r
}

// rules is the whole table's rules, chain by chain (see the package doc).
func (t *Table) rules(rs Ruleset) []*nftables.Rule {
	counter := func() []expr.Any { return []expr.Any{&expr.Counter{}} }
	out := []*nftables.Rule{
		t.rule(chainPrerouting, "", cat(localDst(), []expr.Any{jump(chainPorts)})),
		t.rule(chainOutput, "", cat(localDst(), []expr.Any{jump(chainPorts)})),
		// The node's own connections to a loopback address: the ports
		// chain's loopback hostPorts (the others exclude 127.0.0.0/8).
		t.rule(chainOutput, "", cat(ipMatch(ipDstOff, loopback, false), []expr.Any{jump(chainPorts)})),
	}
	out = append(out, t.portRules(rs.HostPorts, rs.NodePorts)...)
	// A pod reaching a hostPort of its own node comes back out of weft0
	// DNATed to a pod of this node, which would answer it directly, past
	// the translation; taking the host port's address makes it answer
	// through the node.
	out = append(out, t.rule(chainPostrouting, commentHairpin, cat(
		ifMatch(expr.MetaKeyOIFNAME, rs.HostIface, false), ipMatch(ipSrcOff, rs.Cluster, false), ctDNAT(),
		counter(), []expr.Any{&expr.Masq{}})))
	// A node port (externalTrafficPolicy Cluster) translated to a cluster
	// IP enters weft through weft0; the backend may be on any node, so
	// the connection takes weft0's address and the answer comes back here
	// to be translated back. (hostPorts and Local node ports translate to
	// pod addresses, inside the cluster CIDR, and keep the client's.)
	out = append(out, t.rule(chainPostrouting, commentNodeMsq, cat(
		ifMatch(expr.MetaKeyOIFNAME, rs.HostIface, false), ctDNAT(), ipMatch(ipDstOff, rs.Cluster, true),
		counter(), []expr.Any{&expr.Masq{}})))
	// A loopback hostPort's connection leaves through the host port with
	// a 127/8 source (route_localnet lets it): it takes the host port's
	// address so that the pod can answer.
	out = append(out, t.rule(chainPostrouting, commentLoMsq, cat(
		ifMatch(expr.MetaKeyOIFNAME, rs.HostIface, false), ipMatch(ipSrcOff, loopback, false),
		counter(), []expr.Any{&expr.Masq{}})))
	// route_localnet on the host port would also let pods address the
	// node's loopback services (CVE-2020-8558): a new connection to
	// 127/8 arriving from the host port is dropped; answers to the
	// node's own (established) pass.
	out = append(out, t.rule(chainInput, commentLoGuard, cat(
		ifMatch(expr.MetaKeyIIFNAME, rs.HostIface, false), ipMatch(ipDstOff, loopback, false), ctNotEstablished(),
		counter(), []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}})))
	if rs.Masquerade {
		out = append(out, t.rule(chainPostrouting, "", cat(
			ifMatch(expr.MetaKeyOIFNAME, rs.HostIface, true), ipMatch(ipSrcOff, rs.Cluster, false),
			[]expr.Any{jump(chainEgress)})))
		for _, p := range rs.NonMasquerade {
			out = append(out, t.rule(chainEgress, "", cat(ipMatch(ipDstOff, p, false), []expr.Any{ret()})))
		}
		out = append(out, t.rule(chainEgress, commentMasq, cat(counter(),
			[]expr.Any{&expr.Masq{Random: true, FullyRandom: true}})))
	}
	out = append(out,
		t.rule(chainForward, commentOut, cat(ifMatch(expr.MetaKeyIIFNAME, rs.HostIface, false), ifMatch(expr.MetaKeyOIFNAME, rs.HostIface, true), counter())),
		t.rule(chainForward, commentIn, cat(ifMatch(expr.MetaKeyIIFNAME, rs.HostIface, true), ifMatch(expr.MetaKeyOIFNAME, rs.HostIface, false), counter())),
	)
	return out
}

// portRules is one DNAT rule per hostPort mapping, then the node ports':
// one per Cluster node port, one per backend of a Local one.
func (t *Table) portRules(hs []HostPort, nps []NodePort) []*nftables.Rule {
	var out []*nftables.Rule
	for _, h := range sortedHostPorts(hs) {
		es := ipMatch(ipDstOff, loopback, true) // every address: not loopback ones
		if h.HostIP.IsValid() {
			es = ipMatch(ipDstOff, prefix32(h.HostIP), false)
		}
		es = cat(es, l4Dport(h.Proto, h.Port), []expr.Any{&expr.Counter{}}, dnatTo(h.Pod, h.PodPort))
		out = append(out, t.rule(chainPorts, hostPortComment(h), es))
	}
	for _, p := range sortedNodePorts(nps) {
		cmt := commentNodePfx + p.String()
		if p.Owner != "" {
			cmt += " svc " + printable(p.Owner)
		}
		if !p.Local {
			out = append(out, t.rule(chainPorts, cmt, cat(ipMatch(ipDstOff, loopback, true), l4Dport(p.Proto, p.Port), []expr.Any{&expr.Counter{}}, dnatTo(p.ClusterIP, p.ServicePort))))
			continue
		}
		// One backend of n at random: rule i takes 1/(n-i) of what the
		// rules before it left, so each gets 1/n.
		n := len(p.Backends)
		for i, b := range p.Backends {
			var pick []expr.Any
			if i < n-1 {
				pick = []expr.Any{
					&expr.Numgen{Register: 1, Modulus: uint32(n - i), Type: unix.NFT_NG_RANDOM},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: make([]byte, 4)},
				}
			}
			out = append(out, t.rule(chainPorts, cmt, cat(ipMatch(ipDstOff, loopback, true), l4Dport(p.Proto, p.Port), pick, []expr.Any{&expr.Counter{}}, dnatTo(b.Addr(), b.Port()))))
		}
	}
	return out
}

func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

func hostPortComment(h HostPort) string {
	s := commentPortPfx + h.String()
	if h.Owner != "" {
		s += " pod " + printable(h.Owner)
	}
	return s
}
