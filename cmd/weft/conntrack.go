package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"time"

	"github.com/weftnet/weft/api"
)

// conntrackCmd is `weft conntrack [flags]` (list) and `weft conntrack
// flush [flags]`: one name, two subcommands, so it dispatches itself.
const (
	conntrackSynopsis = "[flush] [--ip ADDR] [--port N] [flags]"
	conntrackHelp     = `List the flows weftd tracks: each service flow with its original direction
(client -> cluster IP) and its reply direction (backend -> client), its state,
the service it belongs to and when it expires. 'weft conntrack flush' removes
the matching flows (all without filters): a flushed flow's next packet picks a
backend again.

Examples:
  weft conntrack
  weft conntrack --ip 10.96.0.10 --port 53 -o json
  weft conntrack flush --ip 10.244.2.7`
)

var conntrackCmd = &command{
	name:     "conntrack",
	summary:  "the connection tracking table: list or flush flows",
	synopsis: conntrackSynopsis,
	help:     conntrackHelp,
	raw: func(c *cli, args []string) error {
		if len(args) > 0 && args[0] == "flush" {
			return c.runCommand(conntrackFlushCmd, args[1:])
		}
		return c.runCommand(conntrackListCmd, args)
	},
}

func conntrackFlags(fs *flag.FlagSet, q *api.ConntrackQuery) func() error {
	ip := fs.String("ip", "", "`ADDR` any address of the flow (either direction)")
	port := fs.Uint("port", 0, "`N` any port of the flow (either direction)")
	return func() error {
		if *ip != "" {
			a, err := netip.ParseAddr(*ip)
			if err != nil || !a.Is4() {
				return &usageError{msg: fmt.Sprintf("--ip %q: not an IPv4 address", *ip)}
			}
			q.IP = a
		}
		if *port > 65535 {
			return &usageError{msg: fmt.Sprintf("--port %d: not a port", *port)}
		}
		q.Port = uint16(*port)
		return nil
	}
}

var conntrackListCmd = &command{
	name:     "conntrack",
	synopsis: conntrackSynopsis,
	help:     conntrackHelp,
	setup: func(fs *flag.FlagSet) func(context.Context, *cli) error {
		var q api.ConntrackQuery
		parse := conntrackFlags(fs, &q)
		fs.IntVar(&q.Limit, "limit", 0, "`N` list at most N flows (default and maximum 100000)")
		return func(ctx context.Context, c *cli) error {
			if err := parse(); err != nil {
				return err
			}
			flows, err := c.client().Conntrack(ctx, q)
			if err != nil {
				return err
			}
			return c.emit(flows, func(t *table) {
				if len(flows) == 0 {
					t.row("no flows tracked")
					return
				}
				t.row("PROTO", "ORIGINAL", "REPLY", "STATE", "SERVICE", "IDLE", "EXPIRES")
				for _, f := range flows {
					state := f.State
					if f.Proto == "UDP" {
						state = "unreplied"
						if f.Replied {
							state = "assured"
						}
					}
					t.row(f.Proto, f.Orig.Src.String()+" > "+f.Orig.Dst.String(), f.Reply.Src.String()+" > "+f.Reply.Dst.String(),
						state, orDash(f.Service), age(time.Duration(f.Idle)), age(time.Duration(f.Expires)))
				}
			})
		}
	},
}

var conntrackFlushCmd = &command{
	name:     "conntrack flush",
	synopsis: "[--ip ADDR] [--port N] [flags]",
	help: `Remove the tracked flows that match the filters (every flow without any).

Examples:
  weft conntrack flush
  weft conntrack flush --port 53`,
	setup: func(fs *flag.FlagSet) func(context.Context, *cli) error {
		var q api.ConntrackQuery
		parse := conntrackFlags(fs, &q)
		return func(ctx context.Context, c *cli) error {
			if err := parse(); err != nil {
				return err
			}
			res, err := c.client().FlushConntrack(ctx, q)
			if err != nil {
				return err
			}
			return c.emit(res, func(t *table) { t.kv("flushed", fmt.Sprint(res.Flushed)) })
		}
	},
}
