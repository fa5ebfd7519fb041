package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/weftnet/weft/api"
)

// command is one `weft <name>` subcommand. To add one, append it to
// commands; help, dispatch and flag parsing follow from the entry.
type command struct {
	name     string
	aliases  []string
	summary  string // one line for `weft --help`
	synopsis string // what follows "weft <name>" in the usage line
	help     string // description and examples for `weft <name> --help`
	// setup registers the command's flags on fs and returns the function
	// that runs it once fs is parsed.
	setup func(fs *flag.FlagSet) func(ctx context.Context, c *cli) error
	// raw, when set, replaces flag parsing and setup: it gets the
	// arguments as they are.
	raw func(c *cli, args []string) error
}

// commands is the dispatch table, in the order `weft --help` lists them.
var commands []*command

func init() {
	commands = []*command{
		statusCmd, portsCmd, attachCmd, detachCmd,
		peersCmd, subnetsCmd, fdbCmd, routesCmd, neighCmd, ipamCmd, countersCmd,
		applyCmd, deleteCmd, servicesCmd, policiesCmd, conntrackCmd,
		traceCmd, nodeCmd, simCmd, versionCmd, helpCmd,
	}
}

func lookup(name string) *command {
	for _, cmd := range commands {
		if cmd.name == name {
			return cmd
		}
		for _, a := range cmd.aliases {
			if a == name {
				return cmd
			}
		}
	}
	return nil
}

func (c *cli) topHelp(w io.Writer) {
	fmt.Fprintf(w, `weft inspects and drives weftd, the weft node daemon, through its API socket.

Usage: weft [global flags] <command> [flags]

Commands:
`)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, cmd := range commands {
		fmt.Fprintf(tw, "  %s\t%s\n", cmd.name, cmd.summary)
	}
	tw.Flush()
	fmt.Fprintf(w, `
Global flags (also accepted after the command):
  --socket PATH        weftd's API socket (default %s, or $WEFT_SOCKET)
  -o, --output FORMAT  table (default), or json for scripts
  --timeout DURATION   give up on weftd after this long (default 30s)

Examples:
  weft status
  weft ports -o json | jq -r '.[].ip'
  weft --socket /tmp/sim/node-a.sock peers

Run 'weft <command> --help' for a command's flags and examples.
Exit status: 0 done, 1 failed (e.g. weftd not running), 2 wrong usage.
`, api.DefaultSocket)
}

// isGlobal reports whether a flag is one of the global flags every
// command's flag set carries.
func isGlobal(name string) bool {
	switch name {
	case "socket", "o", "output", "timeout":
		return true
	}
	return false
}

func (c *cli) commandHelp(w io.Writer, cmd *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: weft %s %s\n\n%s\n", cmd.name, cmd.synopsis, strings.TrimSpace(cmd.help))
	var own []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) {
		if !isGlobal(f.Name) {
			own = append(own, f)
		}
	})
	if len(own) > 0 {
		fmt.Fprint(w, "\nFlags:\n")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, f := range own {
			arg, usage := flagArg(f)
			if arg != "" {
				arg = " " + arg
			}
			def := ""
			if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" {
				def = " (default " + f.DefValue + ")"
			}
			fmt.Fprintf(tw, "  --%s%s\t%s%s\n", f.Name, arg, usage, def)
		}
		tw.Flush()
	}
	fmt.Fprint(w, "\nGlobal flags: --socket PATH, -o table|json, --timeout DURATION (see 'weft --help').\n")
}

// flagArg splits a flag's usage into its argument name and text. A usage
// that starts with a backquoted word ("`PORT` destination port") names the
// argument and keeps it out of the text; otherwise flag.UnquoteUsage's
// rules apply.
func flagArg(f *flag.Flag) (arg, usage string) {
	if rest, ok := strings.CutPrefix(f.Usage, "`"); ok {
		if name, text, ok := strings.Cut(rest, "` "); ok {
			return name, text
		}
	}
	return flag.UnquoteUsage(f)
}

var helpCmd = &command{
	name:     "help",
	summary:  "show help for weft or one command",
	synopsis: "[command]",
	help:     "Show the list of commands, or the flags and examples of one command.\n\nExamples:\n  weft help\n  weft help trace",
	raw: func(c *cli, args []string) error {
		if len(args) == 0 {
			c.topHelp(c.stdout)
			return nil
		}
		if len(args) > 1 {
			return &usageError{cmd: "help", msg: "want at most one command name"}
		}
		cmd := lookup(args[0])
		if cmd == nil {
			return &usageError{cmd: "help", msg: fmt.Sprintf("unknown command %q", args[0])}
		}
		if cmd.raw != nil {
			fmt.Fprintf(c.stdout, "Usage: weft %s %s\n\n%s\n", cmd.name, cmd.synopsis, strings.TrimSpace(cmd.help))
			return nil
		}
		fs := flag.NewFlagSet("weft "+cmd.name, flag.ContinueOnError)
		c.globalFlags(fs)
		cmd.setup(fs)
		c.commandHelp(c.stdout, cmd, fs)
		return nil
	},
}
