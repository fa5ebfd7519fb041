package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/weftnet/weft/api"
)

var statusCmd = &command{
	name:     "status",
	summary:  "this node: subnet, underlay, VXLAN settings, registry health",
	synopsis: "[flags]",
	help: `Show the node weftd runs as: its pod subnet, gateway and host address, the
underlay address and VXLAN settings, the pod MTU, whether the cluster registry is
reachable, and how many ports and peers it has.

Examples:
  weft status
  weft status -o json | jq -r .subnet`,
	setup: func(fs *flag.FlagSet) func(context.Context, *cli) error {
		return func(ctx context.Context, c *cli) error {
			s, err := c.client().Status(ctx)
			if err != nil {
				return err
			}
			return c.emit(s, func(t *table) {
				underlay := addr(s.Underlay)
				if s.UnderlayIface != "" {
					underlay += " (" + s.UnderlayIface + ")"
				}
				reg := s.Registry.Backend + ": " + orDash(s.Registry.State)
				if !s.Registry.Since.IsZero() {
					reg += " since " + ago(s.Registry.Since, c.now())
				}
				if s.Registry.LastError != "" {
					reg += ": " + s.Registry.LastError
				}
				t.kv("node", s.Node)
				t.kv("version", s.Version)
				t.kv("underlay", underlay)
				t.kv("subnet", prefix(s.Subnet))
				t.kv("gateway", addr(s.Gateway))
				t.kv("host address", addr(s.HostAddr))
				t.kv("cluster cidr", prefix(s.ClusterCIDR))
				t.kv("router mac", mac(s.RouterMAC))
				t.kv("vxlan", fmt.Sprintf("vni %d, udp port %d", s.VNI, s.Port))
				t.kv("pod mtu", fmt.Sprint(s.MTU))
				t.kv("uptime", fmt.Sprintf("%s (since %s)", age(time.Duration(s.Uptime)), s.StartedAt.Format("2006-01-02 15:04:05 MST")))
				t.kv("registry", reg)
				t.kv("ports", fmt.Sprint(s.Ports))
				t.kv("peers", fmt.Sprint(s.Peers))
				for i, np := range s.Registry.NotPeers {
					if i == 10 {
						t.kv("not a peer", fmt.Sprintf("... and %d more (weft status -o json)", len(s.Registry.NotPeers)-i))
						break
					}
					t.kv("not a peer", np.Node+": "+np.Why)
				}
				t.kv("offload", orDash(s.Offload))
				if s.RxWorkers > 1 {
					t.kv("rx workers", strconv.Itoa(s.RxWorkers))
				}
				if s.Egress != nil {
					egressLines(t, s.Egress)
				}
			})
		}
	},
}

var portsCmd = &command{
	name:     "ports",
	summary:  "pod ports attached to this node, with traffic counters",
	synopsis: "[flags]",
	help: `List the pod interfaces weftd serves on this node: the pod, its interface and
TAP device, address and MAC, and frames and bytes received from (RX) and sent
to (TX) the pod. The node's own host port is not listed. Pod IDs are cut to
12 characters, as docker and crictl show container IDs; --no-trunc (or -o json)
shows them whole.

Examples:
  weft ports
  weft ports --no-trunc
  weft ports -o json | jq '.[] | select(.pod_name == "web-0") | .ip'`,
	setup: func(fs *flag.FlagSet) func(context.Context, *cli) error {
		ids := podIDFlag(fs)
		return func(ctx context.Context, c *cli) error {
			ports, err := c.client().Ports(ctx)
			if err != nil {
				return err
			}
			slices.SortFunc(ports, func(a, b api.Port) int { return a.IP.Compare(b.IP) })
			defer ids.note(c, "ports")
			return c.emit(ports, func(t *table) {
				if len(ports) == 0 {
					t.row("no pod ports attached")
					return
				}
				t.row("POD-ID", "POD", "IFNAME", "TAP", "ADDRESS", "MAC", "RX-FRAMES", "TX-FRAMES", "RX-BYTES", "TX-BYTES", "AGE")
				for _, p := range ports {
					t.row(ids.show(p.PodID), podName(p.PodNamespace, p.PodName), p.IfName, orDash(p.TapName),
						prefix(p.Address), mac(p.MAC), fmt.Sprint(p.RxFrames), fmt.Sprint(p.TxFrames),
						byteSize(p.RxBytes), byteSize(p.TxBytes), ago(p.Since, c.now()))
				}
			})
		}
	},
}

var peersCmd = &command{
	name:     "peers",
	summary:  "remote nodes this node sends VXLAN to",
	synopsis: "[flags]",
	help: `List the other nodes of the cluster that have a live registry lease: their
underlay address, pod subnet, router MAC and VNI, when their lease runs out,
and the overlay traffic exchanged with each. Below the table, nodes the
registry knows that are not peers, and why (with --registry kube: a Node
without a podCIDR in the cluster CIDR, or without weft's annotations because
no weftd runs there yet).

Examples:
  weft peers
  weft peers -o json | jq -r '.[] | "\(.node) \(.underlay)"'`,
	setup: func(fs *flag.FlagSet) func(context.Context, *cli) error {
		return func(ctx context.Context, c *cli) error {
			peers, err := c.client().Peers(ctx)
			if err != nil {
				return err
			}
			slices.SortFunc(peers, func(a, b api.Peer) int { return strings.Compare(a.Node, b.Node) })
			if c.output != outJSON {
				defer c.notPeers(ctx)
			}
			return c.emit(peers, func(t *table) {
				if len(peers) == 0 {
					t.row("no peers")
					return
				}
				t.row("NODE", "UNDERLAY", "SUBNET", "ROUTER-MAC", "VNI", "LEASE", "TX-FRAMES", "RX-FRAMES", "TX-BYTES", "RX-BYTES")
				for _, p := range peers {
					node, lease := p.Node, until(p.Expires, c.now())
					if p.Foreign {
						// weft node add: no weftd; the lease lasts until weft node remove.
						node, lease = p.Node+" (foreign)", "until removed"
						if p.RxBadL4Checksum != 0 {
							lease += fmt.Sprintf("; %d bad checksums", p.RxBadL4Checksum)
						}
					}
					t.row(node, addr(p.Underlay), prefix(p.Subnet), mac(p.RouterMAC), fmt.Sprint(p.VNI),
						lease, fmt.Sprint(p.TxFrames), fmt.Sprint(p.RxFrames),
						byteSize(p.TxBytes), byteSize(p.RxBytes))
				}
			})
		}
	},
}

// notPeers prints, below `weft peers`' table, the nodes the registry knows
// that are not peers and why (weft status has them too; the JSON output of
// peers stays a list of peers). A node that cannot say is left out
// silently: the table above is the answer asked for.
func (c *cli) notPeers(ctx context.Context) {
	s, err := c.client().Status(ctx)
	if err != nil || len(s.Registry.NotPeers) == 0 {
		return
	}
	fmt.Fprintf(c.stdout, "\nnot peers (%d), as the registry lists them:\n", len(s.Registry.NotPeers))
	t := &table{tw: tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)}
	for i, np := range s.Registry.NotPeers {
		if i == 20 {
			t.row("...", fmt.Sprintf("and %d more (weft status -o json)", len(s.Registry.NotPeers)-i))
			break
		}
		t.row(np.Node, np.Why)
	}
	t.tw.Flush()
}

var subnetsCmd = &command{
	name:     "subnets",
	summary:  "every node subnet of the cluster, as the registry lists it",
	synopsis: "[flags]",
	help: `List the node subnets leased in the cluster registry, this node's included
(marked *). USED and FREE count pod addresses; they show "-" where the
answering node does not know them (other nodes' subnets).

Examples:
  weft subnets
  weft subnets -o json | jq -r '.[] | select(.self) | .subnet'`,
	setup: func(fs *flag.FlagSet) func(context.Context, *cli) error {
		return func(ctx context.Context, c *cli) error {
			subnets, err := c.client().Subnets(ctx)
			if err != nil {
				return err
			}
			slices.SortFunc(subnets, func(a, b api.Subnet) int { return a.Subnet.Addr().Compare(b.Subnet.Addr()) })
			return c.emit(subnets, func(t *table) {
				if len(subnets) == 0 {
					t.row("no subnets leased")
					return
				}
				t.row("NODE", "UNDERLAY", "SUBNET", "ROUTER-MAC", "USED", "FREE", "LEASE")
				for _, s := range subnets {
					node := s.Node
					if s.Self {
						node += " *"
					}
					t.row(node, addr(s.Underlay), prefix(s.Subnet), mac(s.RouterMAC), count(s.Used), count(s.Free), until(s.Expires, c.now()))
				}
			})
		}
	},
}

var fdbCmd = &command{
	name:     "fdb",
	summary:  "the L2 switch's learned MAC addresses",
	synopsis: "[flags]",
	help: `List the forwarding database of the node's L2 switch: each MAC address learned
from a frame's source, the port it was seen on, and how long ago.

Examples:
  weft fdb
  weft fdb -o json`,
	setup: func(fs *flag.FlagSet) func(context.Context, *cli) error {
		return func(ctx context.Context, c *cli) error {
			fdb, err := c.client().FDB(ctx)
			if err != nil {
				return err
			}
			slices.SortFunc(fdb, func(a, b api.FDBEntry) int {
				return cmp.Or(cmp.Compare(a.Port, b.Port), strings.Compare(a.MAC.String(), b.MAC.String()))
			})
			return c.emit(fdb, func(t *table) {
				if len(fdb) == 0 {
					t.row("no MAC addresses learned")
					return
				}
				t.row("MAC", "PORT", "NAME", "AGE")
				for _, e := range fdb {
					t.row(mac(e.MAC), fmt.Sprint(e.Port), orDash(e.PortName), age(time.Duration(e.Age)))
				}
			})
		}
	},
}

var routesCmd = &command{
	name:     "routes",
	summary:  "the router's routes: local subnet and peer subnets",
	synopsis: "[flags]",
	help: `List the router's longest-prefix-match table. A local route is delivered to
pods of this node through the neighbour table; a peer route is sent over VXLAN
to the peer's underlay address (VIA) with the peer's router MAC.

Examples:
  weft routes
  weft routes -o json | jq -r '.[] | select(.kind == "peer") | .prefix'`,
	setup: func(fs *flag.FlagSet) func(context.Context, *cli) error {
		return func(ctx context.Context, c *cli) error {
			routes, err := c.client().Routes(ctx)
			if err != nil {
				return err
			}
			slices.SortFunc(routes, func(a, b api.Route) int {
				return cmp.Or(a.Prefix.Addr().Compare(b.Prefix.Addr()), cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits()))
			})
			return c.emit(routes, func(t *table) {
				if len(routes) == 0 {
					t.row("no routes")
					return
				}
				t.row("PREFIX", "KIND", "VIA", "PEER", "PEER-MAC")
				for _, r := range routes {
					t.row(prefix(r.Prefix), r.Kind, addr(r.Via), orDash(r.Peer), mac(r.PeerMAC))
				}
			})
		}
	},
}

var neighCmd = &command{
	name:     "neigh",
	aliases:  []string{"neighbours", "neighbors"},
	summary:  "the router's neighbour table (local IP -> MAC, port)",
	synopsis: "[flags]",
	help: `List the router's neighbour table: which MAC address and port each local IP
lives behind. Static entries are set when a port is attached; the others are
learned from ARP.

Examples:
  weft neigh
  weft neigh -o json | jq -r '.[] | select(.static | not) | .ip'`,
	setup: func(fs *flag.FlagSet) func(context.Context, *cli) error {
		return func(ctx context.Context, c *cli) error {
			neigh, err := c.client().Neighbours(ctx)
			if err != nil {
				return err
			}
			slices.SortFunc(neigh, func(a, b api.Neighbour) int { return a.IP.Compare(b.IP) })
			return c.emit(neigh, func(t *table) {
				if len(neigh) == 0 {
					t.row("no neighbours")
					return
				}
				t.row("IP", "MAC", "PORT", "NAME", "STATIC", "AGE")
				for _, n := range neigh {
					static := "no"
					if n.Static {
						static = "yes"
					}
					t.row(addr(n.IP), mac(n.MAC), fmt.Sprint(n.Port), orDash(n.PortName), static, age(time.Duration(n.Age)))
				}
			})
		}
	},
}

var ipamCmd = &command{
	name:     "ipam",
	summary:  "pod addresses handed out from this node's subnet",
	synopsis: "[flags]",
	help: `Show how much of this node's pod subnet is in use and which pod interface
holds each address.

Examples:
  weft ipam
  weft ipam -o json | jq .free`,
	setup: func(fs *flag.FlagSet) func(context.Context, *cli) error {
		ids := podIDFlag(fs)
		return func(ctx context.Context, c *cli) error {
			ipam, err := c.client().IPAM(ctx)
			if err != nil {
				return err
			}
			slices.SortFunc(ipam.Allocations, func(a, b api.IPAMAllocation) int { return a.IP.Compare(b.IP) })
			defer ids.note(c, "ipam")
			return c.emit(ipam, func(t *table) {
				t.row(fmt.Sprintf("subnet %s: %s used, %s free", prefix(ipam.Subnet), count(ipam.Used), count(ipam.Free)))
				if len(ipam.Allocations) == 0 {
					return
				}
				t.row()
				t.row("IP", "POD-ID", "IFNAME", "AGE")
				for _, a := range ipam.Allocations {
					t.row(addr(a.IP), ids.show(a.PodID), a.IfName, ago(a.Since, c.now()))
				}
			})
		}
	},
}

var countersCmd = &command{
	name:     "counters",
	summary:  "packet counters, drops by reason and by NetworkPolicy",
	synopsis: "[--nonzero] [flags]",
	help: `Show the node's packet counters by name: traffic per device, every drop
reason ("drop.<reason>"; NetworkPolicy's are drop.policy_*), and the drops of
each NetworkPolicy in force by the direction it isolates
("policy.ingress_drops.<namespace>/<name>", "policy.egress_drops...": a
denied frame counts under every policy isolating the denied pod in that
direction). Counters count since weftd started.

Examples:
  weft counters --nonzero
  weft counters -o json | jq 'with_entries(select(.key | startswith("drop.")))'`,
	setup: func(fs *flag.FlagSet) func(context.Context, *cli) error {
		nonzero := fs.Bool("nonzero", false, "hide counters that are zero")
		return func(ctx context.Context, c *cli) error {
			counters, err := c.client().Counters(ctx)
			if err != nil {
				return err
			}
			if *nonzero {
				for k, v := range counters {
					if v == 0 {
						delete(counters, k)
					}
				}
			}
			return c.emit(counters, func(t *table) {
				if len(counters) == 0 {
					t.row("no counters")
					return
				}
				t.row("COUNTER", "VALUE")
				for _, k := range slices.Sorted(maps.Keys(counters)) {
					t.row(k, fmt.Sprint(counters[k]))
				}
			})
		}
	},
}

// versionInfo is `weft version -o json`.
type versionInfo struct {
	Weft       string `json:"weft"`
	Go         string `json:"go"`
	Weftd      string `json:"weftd,omitempty"`
	Node       string `json:"node,omitempty"`
	WeftdError string `json:"weftd_error,omitempty"`
}

var versionCmd = &command{
	name:     "version",
	summary:  "versions of weft and of the weftd it talks to",
	synopsis: "[flags]",
	help: `Print the version of this weft binary and, when it answers, of weftd.
weftd not running is reported but is not an error here.

Examples:
  weft version`,
	setup: func(fs *flag.FlagSet) func(context.Context, *cli) error {
		return func(ctx context.Context, c *cli) error {
			v := versionInfo{Weft: api.BuildVersion(), Go: runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH}
			if s, err := c.client().Status(ctx); err != nil {
				v.WeftdError = err.Error()
			} else {
				v.Weftd, v.Node = s.Version, s.Node
			}
			return c.emit(v, func(t *table) {
				t.kv("weft", v.Weft+" ("+v.Go+")")
				if v.WeftdError != "" {
					t.kv("weftd", v.WeftdError)
				} else {
					t.kv("weftd", v.Weftd+" on node "+v.Node)
				}
			})
		}
	},
}
