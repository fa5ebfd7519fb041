package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"strings"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/packet"
)

var nodeCmd = &command{
	name:     "node",
	summary:  "register or remove a node that runs no weftd (a Linux kernel VXLAN node)",
	synopsis: "add --name NAME --underlay IP --vtep-mac MAC [--dev DEV] [--underlay-dev IFACE] | remove --name NAME",
	help: `Register a node that does not run weftd, such as a Linux host whose kernel vxlan
device is set up the way flannel's vxlan backend sets one up, so that every weft
node routes to it; or remove one.

  add     gives the node a subnet from the cluster's pool, as for any node, and a
          registry lease that nobody has to renew (it lasts until 'weft node
          remove'), then prints the ip and bridge commands that set the node up:
          its vxlan device with <subnet>.0, and a route, a permanent neighbour and
          an FDB entry for each other node. A node that joins later needs those
          three entries too ('weft subnets' lists every node).
  remove  ends the registration and frees the subnet.

Over a veth underlay (or any device that leaves checksums to hardware), turn
transmit checksum offload off on the kernel node's underlay device, or its
pods' TCP fails while ping works: ethtool -K IFACE tx off (see README).

Flags of add:
  --name NAME         the node's name in the registry
  --underlay IP       its IPv4 underlay address (where weft nodes send its VXLAN)
  --vtep-mac MAC      its vxlan device's MAC
  --dev DEV           the vxlan device name in the printed commands (default weft.1)
  --underlay-dev IFACE  the underlay interface in the printed commands (default eth0)
Flags of remove:
  --name NAME

Examples:
  weft node add --name k1 --underlay 192.168.1.20 --vtep-mac 02:6b:00:00:00:01 --underlay-dev ens3
  weft node add --name k1 --underlay 192.168.1.20 --vtep-mac 02:6b:00:00:00:01 -o json
  weft node remove --name k1`,
}

func init() {
	nodeCmd.raw = func(c *cli, args []string) error {
		if len(args) == 0 {
			return &usageError{cmd: "node", msg: "want a subcommand: add or remove"}
		}
		switch args[0] {
		case "add":
			return c.runCommand(nodeAddCmd, args[1:])
		case "remove", "rm":
			return c.runCommand(nodeRemoveCmd, args[1:])
		case "-h", "--help", "help":
			fmt.Fprintf(c.stdout, "Usage: weft node %s\n\n%s\n", nodeCmd.synopsis, strings.TrimSpace(nodeCmd.help))
			return nil
		}
		return &usageError{cmd: "node", msg: fmt.Sprintf("unknown subcommand %q: want add or remove", args[0])}
	}
}

var nodeAddCmd = &command{
	name:     "node add",
	synopsis: "--name NAME --underlay IP --vtep-mac MAC [--dev DEV] [--underlay-dev IFACE] [flags]",
	help:     "Register a node that runs no weftd and print the commands that set it up (see 'weft node --help').",
	setup: func(fs *flag.FlagSet) func(context.Context, *cli) error {
		var req api.ForeignNodeRequest
		var underlay, vtep string
		fs.StringVar(&req.Name, "name", "", "`NAME` the node's name in the registry; required")
		fs.StringVar(&underlay, "underlay", "", "`IP` its IPv4 underlay address; required")
		fs.StringVar(&vtep, "vtep-mac", "", "`MAC` its vxlan device's MAC; required")
		dev := fs.String("dev", "weft.1", "`DEV` the vxlan device name in the printed commands")
		underDev := fs.String("underlay-dev", "eth0", "`IFACE` the node's underlay interface in the printed commands")
		return func(ctx context.Context, c *cli) error {
			if err := required([2]string{"name", req.Name}, [2]string{"underlay", underlay}, [2]string{"vtep-mac", vtep}); err != nil {
				return err
			}
			var err error
			if req.Underlay, err = netip.ParseAddr(underlay); err != nil {
				return &usageError{msg: fmt.Sprintf("--underlay %q: %v", underlay, err)}
			}
			if req.VTEPMAC, err = packet.ParseMAC(vtep); err != nil {
				return &usageError{msg: fmt.Sprintf("--vtep-mac %q: %v", vtep, err)}
			}
			f, err := c.client().AddForeignNode(ctx, req)
			if err != nil {
				return err
			}
			if c.output == outJSON {
				return c.emit(f, nil)
			}
			w := c.stdout
			fmt.Fprintf(w, "# node %s: subnet %s, underlay %s, vxlan MAC %s (VNI %d, UDP port %d, pod MTU %d)\n",
				f.Name, f.Subnet, f.Underlay, f.VTEPMAC, f.VNI, f.Port, f.MTU)
			fmt.Fprintf(w, "# Run as root on %s; %s is its underlay interface.\n", f.Name, *underDev)
			for _, argv := range f.Commands(*dev, *underDev) {
				fmt.Fprintln(w, strings.Join(argv, " "))
			}
			fmt.Fprintf(w, "# Its pods: a bridge holding %s/%d (the pods' gateway), net.ipv4.ip_forward=1, pod MTU %d.\n",
				f.Subnet.Masked().Addr().Next(), f.Subnet.Bits(), f.MTU)
			fmt.Fprintf(w, "# Over a veth underlay: ethtool -K %s tx off (else its pods' TCP fails while ping works).\n", *underDev)
			fmt.Fprintln(w, "# Each node that joins later needs its route, neigh and fdb lines too: weft subnets lists them.")
			return nil
		}
	},
}

var nodeRemoveCmd = &command{
	name:     "node remove",
	synopsis: "--name NAME [flags]",
	help:     "End the registration of a node added with 'weft node add' and free its subnet.",
	setup: func(fs *flag.FlagSet) func(context.Context, *cli) error {
		name := fs.String("name", "", "`NAME` the node; required")
		return func(ctx context.Context, c *cli) error {
			if err := required([2]string{"name", *name}); err != nil {
				return err
			}
			if err := c.client().RemoveForeignNode(ctx, *name); err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "removed node %s; on it: ip link del DEV (the vxlan device)\n", *name)
			return nil
		}
	},
}
