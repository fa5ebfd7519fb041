// Package nft keeps weftd's own nftables table in the node's kernel: the
// rules with which the node's network stack carries pod traffic out of the
// cluster and outside traffic in.
//
// weft's pods reach the rest of the world through the node: the weft router
// hands frames for addresses outside the cluster to the host port (weft0),
// and the node's kernel routes them out of its uplink. The kernel also does
// the address translation, with the rules this package writes:
//
//	table ip weft {
//	  chain prerouting  { type nat hook prerouting priority dstnat; fib daddr type local ip daddr != 127.0.0.0/8 jump ports }
//	  chain output      { type nat hook output priority dstnat;     fib daddr type local ip daddr != 127.0.0.0/8 jump ports }
//	  chain ports       { # one rule per hostPort mapping:
//	                      [ip daddr HOSTIP] tcp dport HOSTPORT counter dnat to POD:PORT }
//	  chain postrouting { type nat hook postrouting priority srcnat;
//	                      oifname "weft0" ip saddr CLUSTER ct status dnat counter masquerade   # hairpin
//	                      oifname != "weft0" ip saddr CLUSTER jump egress }
//	  chain egress      { ip daddr NONMASQ return ...; counter masquerade random,fully-random }
//	  chain forward     { type filter hook forward priority filter; policy accept;
//	                      iifname "weft0" oifname != "weft0" counter   # pods -> outside
//	                      iifname != "weft0" oifname "weft0" counter } # outside -> pods
//	}
//
// The table is weftd's alone: it is written whole in one netlink batch (one
// nftables transaction: the kernel applies all of it or none), rules of other
// tables are never read or changed, and Remove deletes it. The ports chain
// alone is rewritten (again in one batch) when hostPort mappings change, so
// the egress counters keep counting.
//
// The kernel keeps each connection's translation in its conntrack entry, not
// in the rules: replacing the table (a weftd restart) does not disturb an
// established masqueraded connection.
package nft
