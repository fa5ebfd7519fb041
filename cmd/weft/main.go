// Command weft inspects and drives a weftd node through its API socket:
// status, ports, peers, forwarding tables, counters, pod attach/detach and
// packet traces.
//
// Usage: weft [--socket PATH] [-o table|json] <command> [flags]
//
// Run `weft --help` for the commands and `weft <command> --help` for
// each one's flags and examples.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/weftnet/weft/api"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // the command ran and failed (weftd not running, API error)
	exitUsage = 2 // the command line was wrong
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is weft's whole logic, separated from main for tests.
func run(args []string, stdout, stderr io.Writer) int {
	c := &cli{stdout: stdout, stderr: stderr, getenv: os.Getenv, now: time.Now}
	return c.main(args)
}

// cli is one invocation's settings and outputs.
type cli struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	now            func() time.Time

	// Global flags, accepted before and after the command name.
	socket  string
	output  string
	timeout time.Duration
}

// Output formats.
const (
	outTable = "table"
	outJSON  = "json"
)

// usageError is a wrong command line: exit 2 with a pointer to --help.
type usageError struct {
	cmd string // "" for the top level
	msg string
}

func (e *usageError) Error() string { return e.msg }

// exitCodeError ends the command with code after printing msg.
type exitCodeError struct {
	code int
	msg  string
}

func (e *exitCodeError) Error() string { return e.msg }

func (c *cli) main(args []string) int {
	c.socket = api.DefaultSocket
	if s := c.getenv("WEFT_SOCKET"); s != "" {
		c.socket = s
	}
	c.output = outTable
	c.timeout = 30 * time.Second

	fs := flag.NewFlagSet("weft", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.globalFlags(fs)
	switch err := fs.Parse(args); {
	case errors.Is(err, flag.ErrHelp):
		c.topHelp(c.stdout)
		return exitOK
	case err != nil:
		return c.report(&usageError{msg: err.Error()})
	}
	if fs.NArg() == 0 {
		c.topHelp(c.stderr)
		return exitUsage
	}
	name, rest := fs.Arg(0), fs.Args()[1:]
	cmd := lookup(name)
	if cmd == nil {
		return c.report(&usageError{msg: fmt.Sprintf("unknown command %q", name)})
	}
	return c.report(c.runCommand(cmd, rest))
}

// report prints err (if any) and returns the exit code it calls for.
func (c *cli) report(err error) int {
	var ue *usageError
	var ee *exitCodeError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ee):
		if ee.msg != "" { // empty: the command has said all it had to
			fmt.Fprintln(c.stderr, ee.msg)
		}
		return ee.code
	case errors.As(err, &ue):
		prefix, help := "weft", "weft --help"
		if ue.cmd != "" {
			prefix, help = "weft "+ue.cmd, "weft "+ue.cmd+" --help"
		}
		fmt.Fprintf(c.stderr, "%s: %s\nRun '%s' for usage.\n", prefix, ue.msg, help)
		return exitUsage
	default:
		fmt.Fprintf(c.stderr, "weft: %v\n", err)
		return exitError
	}
}

func (c *cli) globalFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.socket, "socket", c.socket, "weftd's API socket `PATH`")
	fs.StringVar(&c.output, "o", c.output, "output `FORMAT`: table or json")
	fs.StringVar(&c.output, "output", c.output, "output `FORMAT`: table or json")
	fs.DurationVar(&c.timeout, "timeout", c.timeout, "give up on weftd after `DURATION`")
}

// runCommand parses cmd's flags from args and runs it.
func (c *cli) runCommand(cmd *command, args []string) error {
	if cmd.raw != nil {
		return cmd.raw(c, args)
	}
	fs := flag.NewFlagSet("weft "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.globalFlags(fs)
	runFn := cmd.setup(fs)
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		c.commandHelp(c.stdout, cmd, fs)
		return nil
	}
	if err != nil {
		return &usageError{cmd: cmd.name, msg: err.Error()}
	}
	if fs.NArg() > 0 {
		return &usageError{cmd: cmd.name, msg: fmt.Sprintf("unexpected argument %q (every value goes with a flag)", fs.Arg(0))}
	}
	if c.output != outTable && c.output != outJSON {
		return &usageError{cmd: cmd.name, msg: fmt.Sprintf("-o %q: want table or json", c.output)}
	}
	if c.timeout <= 0 {
		return &usageError{cmd: cmd.name, msg: fmt.Sprintf("--timeout %v: want a positive duration", c.timeout)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	err = runFn(ctx, c)
	var ue *usageError
	if errors.As(err, &ue) && ue.cmd == "" {
		ue.cmd = cmd.name
	}
	return err
}

func (c *cli) client() *api.Client { return api.NewClient(c.socket) }

// required returns a usage error when a mandatory flag is empty.
func required(flags ...[2]string) error {
	var missing []string
	for _, f := range flags {
		if f[1] == "" {
			missing = append(missing, "--"+f[0])
		}
	}
	if len(missing) > 0 {
		return &usageError{msg: strings.Join(missing, ", ") + " required"}
	}
	return nil
}
