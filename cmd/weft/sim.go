package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/weftnet/weft/sim"
)

var simCmd = &command{
	name:     "sim",
	summary:  "a multi-node weft cluster in network namespaces on this machine",
	synopsis: "up|test|status|exec|kill|restart|add-node|down [flags]",
	help: `Build a weft cluster out of network namespaces on this machine and check it:
an underlay bridge in its own namespace, one namespace per node running its own
weftd (log file per node), and pod namespaces attached through each node's API.
Nothing is added to the root namespace; every namespace is named after the sim
(--name, default "weft": weft-u, weft-n1, weft-n1-p1). State, logs and the
record that 'down' works from live in --dir (default /run/weft-sim/NAME).
Needs root and nsenter, ip and ping (run make deps).

Commands:
  up [--nodes N] [--pods-per-node M] [--registry file|etcd|kube] [--weftd PATH] [--services]
        build the sim; with --registry etcd an etcd runs inside the underlay
        namespace on the bridge's address (.1), and the nodes use it;
        with --registry kube a Kubernetes control plane (etcd, kube-apiserver,
        kube-controller-manager --allocate-node-cidrs; binaries from
        --kube-tools, default $WEFT_TOOLS or the tools/ directory next to
        weft, as make tools links them) runs in namespace NAME-k on the
        underlay (.2); every weftd runs --registry kube as deploy/weft.yaml's
        ServiceAccount with its least-privilege ClusterRole (kubeconfigs in
        DIR/kube; the sim itself uses admin.kubeconfig); each node's Node
        object is written before its weftd starts (its subnet is the Node's
        spec.podCIDR), each pod gets a Pod object (labels, podIP, Ready), and
        apply/delete go to the API server (which allocates cluster IPs);
        --services applies an example Service over every pod
  test [--workers N] [-o json]
        every pod and node to every pod and node (ICMP echo and TCP echo; the
        TCP server reports the address it saw, which must be the client's: no
        NAT), two processes of a pod on localhost, the path MTU across nodes,
        and with --services every pod and node to the Service's cluster IP;
        exit status 1 if anything fails
  status [-o json]       nodes, pods, addresses, weftd PIDs and health
  apply -f FILE|-        store Kubernetes objects (Services, EndpointSlices, Pods'
                         labels, policies) through a node, or with --registry
                         kube in the API server (server-side apply; a Pod
                         document sets the Pod's labels); sim pods are in
                         namespace "sim" with labels app=sim, sim-pod=NAME
  delete -f FILE|-       remove the objects a file names
  exec POD|NODE [--name NAME] [--] CMD...
                         run CMD in a pod's or node's namespace; exit status passes through
  kill NODE              kill the node's weftd with SIGKILL, as a crash would
  restart NODE           stop (SIGTERM) and start the node's weftd
  add-node [--pods M]    add a node (and M pods on it)
  down                   stop and remove everything the sim made (safe to repeat)

Every command takes --name NAME and --dir DIR to pick the sim.
%s
Examples:
  weft sim up --nodes 3 --pods-per-node 2 && weft sim test; weft sim down
  weft sim up --nodes 2 --pods-per-node 2 --registry etcd --name e
  weft sim up --nodes 2 --pods-per-node 2 --registry kube --name k --services
  weft sim exec n1-p1 -- ping -c 1 10.244.1.3
  weft sim exec n1 -- ip route
  weft sim kill n2 && sleep 8 && weft sim test`,
}

// runSim reads simCmd's help, so it is hooked up here, not in the literal;
// the help's flag list is made from the subcommands' own flag sets, so it
// cannot miss one.
func init() {
	simCmd.raw = runSim
	simCmd.help = fmt.Sprintf(simCmd.help, simFlagsHelp())
}

// simSubOrder is the order the help lists the subcommands in.
var simSubOrder = []string{"up", "test", "status", "apply", "delete", "exec", "kill", "restart", "add-node", "down"}

// simFlagsHelp lists the flags of every sim subcommand: those all of them
// take once, then each one's own.
func simFlagsHelp() string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	common := map[string]bool{}
	fs := flag.NewFlagSet("common", flag.ContinueOnError)
	(&simFlags{}).register(fs)
	fmt.Fprintln(tw, "\nFlags of every command:")
	fs.VisitAll(func(fl *flag.Flag) {
		common[fl.Name] = true
		if fl.Name != "o" { // -o is listed with --output
			printSimFlag(tw, fl)
		}
	})
	for _, name := range simSubOrder {
		fs := flag.NewFlagSet(name, flag.ContinueOnError)
		simSubs[name].setup(fs, &simFlags{})
		first := true
		fs.VisitAll(func(fl *flag.Flag) {
			if common[fl.Name] {
				return
			}
			if first {
				fmt.Fprintf(tw, "\nFlags of %s:\n", name)
				first = false
			}
			printSimFlag(tw, fl)
		})
	}
	tw.Flush()
	return b.String()
}

func printSimFlag(w io.Writer, fl *flag.Flag) {
	arg, usage := flagArg(fl)
	names := "--" + fl.Name
	if fl.Name == "output" {
		names = "-o, --output"
	}
	if arg != "" {
		names += " " + arg
	}
	if fl.DefValue != "" && fl.DefValue != "0" && fl.DefValue != "false" && !strings.Contains(usage, "(default") {
		usage += " (default " + fl.DefValue + ")"
	}
	fmt.Fprintf(w, "  %s\t%s\n", names, usage)
}

// simFlags are the flags every sim subcommand takes.
type simFlags struct {
	name, dir, output string
}

func (f *simFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.name, "name", "weft", "`NAME` the sim's name, prefix of its namespaces")
	fs.StringVar(&f.dir, "dir", "", "`DIR` the sim's state directory, which holds its record (default /run/weft-sim/NAME)")
	fs.StringVar(&f.output, "o", outTable, "`FORMAT` output: table or json (also --output)")
	fs.StringVar(&f.output, "output", outTable, "`FORMAT` output: table or json")
}

func (f *simFlags) stateDir() string {
	if f.dir != "" {
		return f.dir
	}
	return sim.DefaultDir(f.name)
}

// load reads the record of the sim the flags name.
func (f *simFlags) load(c *cli) (*sim.Cluster, error) {
	dir := f.stateDir()
	if !sim.Exists(dir) {
		return nil, &exitCodeError{code: exitError, msg: fmt.Sprintf("weft sim: no sim %q is up (no record in %s); start one with `weft sim up`", f.name, dir)}
	}
	cl, err := sim.Load(dir)
	if err != nil {
		return nil, err
	}
	cl.SetProgress(c.progress)
	return cl, nil
}

func (c *cli) progress(format string, args ...any) {
	fmt.Fprintf(c.stdout, format+"\n", args...)
}

// simSub is one `weft sim` subcommand.
type simSub struct {
	synopsis string
	// args is how many positional arguments it takes: 0, 1, or -1 for
	// "one, then a command line" (exec).
	args  int
	setup func(fs *flag.FlagSet, f *simFlags) func(ctx context.Context, c *cli, pos []string) error
}

var simSubs = map[string]*simSub{
	"up":       {synopsis: "[--nodes N] [--pods-per-node M] [--registry file|etcd|kube] [--weftd PATH] [--etcd PATH] [--kube-tools DIR] [--lease-ttl DURATION] [--keep-on-failure]", setup: simUp},
	"test":     {synopsis: "[--workers N] [--port P] [--policy-suite] [-o json]", setup: simTest},
	"status":   {synopsis: "[-o json]", setup: simStatus},
	"exec":     {synopsis: "POD|NODE [--] CMD [ARG...]", args: -1, setup: simExec},
	"kill":     {synopsis: "NODE", args: 1, setup: simKill},
	"restart":  {synopsis: "NODE", args: 1, setup: simRestart},
	"add-node": {synopsis: "[--pods M]", setup: simAddNode},
	"down":     {synopsis: "", setup: simDown},
	"apply":    {synopsis: "-f FILE|-", setup: simApply(false)},
	"delete":   {synopsis: "-f FILE|-", setup: simApply(true)},
}

func runSim(c *cli, args []string) error {
	if len(args) == 0 {
		return &usageError{cmd: "sim", msg: "want a subcommand: up, test, status, exec, kill, restart, add-node or down"}
	}
	name, rest := args[0], args[1:]
	if sim.IsHelper(name) {
		if code := sim.HelperMain(args, c.stdout, c.stderr); code != 0 {
			return &exitCodeError{code: code}
		}
		return nil
	}
	if name == "-h" || name == "--help" || name == "help" {
		fmt.Fprintf(c.stdout, "Usage: weft sim %s\n\n%s\n", simCmd.synopsis, strings.TrimSpace(simCmd.help))
		return nil
	}
	sub := simSubs[name]
	if sub == nil {
		return &usageError{cmd: "sim", msg: fmt.Sprintf("unknown subcommand %q: want up, test, status, exec, kill, restart, add-node or down", name)}
	}
	fs := flag.NewFlagSet("weft sim "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var f simFlags
	f.register(fs)
	runFn := sub.setup(fs, &f)
	pos, err := parseInterspersed(fs, rest, sub.args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(c.stdout, "Usage: weft sim %s %s\n\nFlags:\n", name, sub.synopsis)
		tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
		fs.VisitAll(func(fl *flag.Flag) {
			if fl.Name == "output" { // -o says it
				return
			}
			arg, usage := flagArg(fl)
			dash := "--"
			if len(fl.Name) == 1 {
				dash = "-"
			}
			if arg != "" {
				arg = " " + arg
			}
			if fl.DefValue != "" && fl.DefValue != "0" && fl.DefValue != "false" && !strings.Contains(usage, "(default") {
				usage += " (default " + fl.DefValue + ")"
			}
			fmt.Fprintf(tw, "  %s%s%s\t%s\n", dash, fl.Name, arg, usage)
		})
		tw.Flush()
		return nil
	}
	if err != nil {
		return &usageError{cmd: "sim " + name, msg: err.Error()}
	}
	if f.output != outTable && f.output != outJSON {
		return &usageError{cmd: "sim " + name, msg: fmt.Sprintf("-o %q: want table or json", f.output)}
	}
	if os.Geteuid() != 0 {
		return &exitCodeError{code: exitError, msg: "weft sim: must run as root (it creates network namespaces and TAP devices and reads " + f.stateDir() + ")"}
	}
	// Ctrl-C cancels what is under way; what was built stays recorded for
	// `weft sim down`.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runFn(ctx, c, pos)
}

// parseInterspersed parses flags that may come before or after the
// positional arguments. With want -1, everything after the first
// positional argument (and an optional "--") is kept as it is.
func parseInterspersed(fs *flag.FlagSet, args []string, want int) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		if want == -1 {
			pos = append(pos, args[0])
			// The sim's own flags may follow the target too; the command
			// starts at "--" (which Parse consumes) or at the first
			// word that is not a flag. A flag the sim does not know is an
			// error, not the command's: it would belong after "--".
			if err := fs.Parse(args[1:]); err != nil {
				return nil, fmt.Errorf("%w (a command's own flags go after --: weft sim exec POD|NODE [flags] -- CMD [ARG...])", err)
			}
			cmd := fs.Args()
			if len(cmd) == 0 {
				return nil, errors.New("no command given: weft sim exec POD|NODE -- CMD [ARG...]")
			}
			return append(pos, cmd...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	switch {
	case want == -1:
		return nil, errors.New("want a pod or node and a command: weft sim exec POD|NODE -- CMD [ARG...]")
	case len(pos) < want:
		return nil, errors.New("want a node name (n1, n2, ...)")
	case len(pos) > want:
		return nil, fmt.Errorf("unexpected argument %q", pos[want])
	}
	return pos, nil
}

func simUp(fs *flag.FlagSet, f *simFlags) func(context.Context, *cli, []string) error {
	nodes := fs.Int("nodes", 3, "`N` how many nodes")
	pods := fs.Int("pods-per-node", 2, "`M` how many pods on each node")
	registry := fs.String("registry", "file", "`file|etcd|kube` the cluster registry; etcd runs an etcd inside the sim, kube a Kubernetes control plane (weftd --registry kube)")
	kubeTools := fs.String("kube-tools", "", "`DIR` the directory holding etcd, kube-apiserver and kube-controller-manager for --registry kube (default $WEFT_TOOLS, else tools/ next to weft, else bin/tools of the module here)")
	weftd := fs.String("weftd", "", "`PATH` the weftd binary (default: the weftd next to this weft, else on PATH)")
	etcd := fs.String("etcd", "", "`PATH` the etcd binary for --registry etcd (default: on PATH)")
	ttl := fs.Duration("lease-ttl", 6*time.Second, "`DURATION` the nodes' registry lease TTL")
	weftdArgs := fs.String("weftd-args", "", "`FLAGS` extra flags for every node's weftd, space separated, e.g. \"--offload=false\"")
	nodeCPUs := fs.Int("node-cpus", 0, "`N` each weftd's GOMAXPROCS: 0 shares this machine's CPUs out among the nodes (at least 1 each), as each node of a real cluster has its own; -1 lets every weftd run on every CPU (Go's default). A GOMAXPROCS in the environment wins")
	keep := fs.Bool("keep-on-failure", false, "leave a sim that failed to come up in place (for its logs) instead of taking it down")
	services := fs.Bool("services", false, "apply the example Service (sim/echo, "+sim.ExampleClusterIP+":80 -> every pod); `sim test` then checks it from every node and pod")
	return func(ctx context.Context, c *cli, _ []string) error {
		if *nodes < 1 || *pods < 0 {
			return &usageError{msg: fmt.Sprintf("--nodes %d --pods-per-node %d: want at least one node and no negative pod count", *nodes, *pods)}
		}
		if *nodeCPUs < -1 {
			return &usageError{msg: fmt.Sprintf("--node-cpus %d: want -1 (every CPU), 0 (a share of this machine's) or a count", *nodeCPUs)}
		}
		bin, err := findWeftd(*weftd)
		if err != nil {
			return err
		}
		dir := f.stateDir()
		if sim.Exists(dir) {
			return &exitCodeError{code: exitError, msg: fmt.Sprintf("weft sim: sim %q is already up (record in %s): use it, take it down with `weft sim down --name %s`, or pick another --name", f.name, dir, f.name)}
		}
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("sim up: find own executable for the outside host's server: %w", err)
		}
		cl, err := sim.New(sim.Options{
			Name: f.name, Dir: dir, Weftd: bin, Registry: *registry, Etcd: *etcd, KubeTools: findKubeTools(*kubeTools),
			LeaseTTL: *ttl, ExtraArgs: strings.Fields(*weftdArgs), NodeCPUs: *nodeCPUs, Progress: c.progress,
			Outside: true, Helper: []string{exe, "sim"},
		})
		if err != nil {
			return err
		}
		start := time.Now()
		c.progress("sim %s: %d nodes x %d pods, registry %s, weftd %s, state in %s", f.name, *nodes, *pods, *registry, bin, dir)
		err = cl.Up(ctx, *nodes, *pods)
		if err == nil && *services {
			err = cl.ApplyExample(ctx)
		}
		if err != nil {
			if *keep {
				return fmt.Errorf("sim up: %w\n(kept for inspection: logs in %s; `weft sim down --name %s` removes it)", err, dir, f.name)
			}
			c.progress("sim up failed; taking down what was built")
			if derr := cl.Down(); derr != nil {
				return fmt.Errorf("sim up: %w; and down: %v", err, derr)
			}
			return fmt.Errorf("sim up: %w", err)
		}
		c.progress("sim %s up: %d nodes, %d pods in %s. Next: weft sim test, weft sim status, weft sim down",
			f.name, len(cl.Nodes), len(cl.Pods()), time.Since(start).Round(10*time.Millisecond))
		return nil
	}
}

// findKubeTools resolves --kube-tools: given, else "" when $WEFT_TOOLS is
// set (sim.KubeBinaries reads it), else tools/ next to this binary (make
// build puts weft in bin/, make tools the binaries in bin/tools), else ""
// (bin/tools of the module in the working directory).
func findKubeTools(given string) string {
	if given != "" {
		if p, err := filepath.Abs(given); err == nil {
			return p
		}
		return given
	}
	if os.Getenv("WEFT_TOOLS") != "" {
		return ""
	}
	if exe, err := os.Executable(); err == nil {
		d := filepath.Join(filepath.Dir(exe), "tools")
		if st, err := os.Stat(d); err == nil && st.IsDir() {
			return d
		}
	}
	return ""
}

// findWeftd resolves --weftd: given, else next to this binary, else PATH.
func findWeftd(given string) (string, error) {
	if given != "" {
		if _, err := os.Stat(given); err != nil {
			return "", fmt.Errorf("--weftd: %w", err)
		}
		return filepath.Abs(given)
	}
	var tried []string
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "weftd")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		tried = append(tried, p)
	}
	if p, err := exec.LookPath("weftd"); err == nil {
		return filepath.Abs(p)
	}
	tried = append(tried, "PATH")
	return "", fmt.Errorf("weftd not found (tried %s): run make build, or give --weftd PATH", strings.Join(tried, ", "))
}

func simTest(fs *flag.FlagSet, f *simFlags) func(context.Context, *cli, []string) error {
	workers := fs.Int("workers", 8, "`N` how many checks run at once")
	port := fs.Int("port", 7777, "`PORT` the TCP test servers listen on (the localhost check uses PORT+1)")
	policySuite := fs.Bool("policy-suite", false, "run the NetworkPolicy suite instead: nine pods added in namespaces netpol-x, -y, -z, the truth tables of failed steps printed, and those of the cases that attach a pod and restart a node")
	return func(ctx context.Context, c *cli, _ []string) error {
		cl, err := f.load(c)
		if err != nil {
			return err
		}
		if *policySuite {
			return runPolicySuite(ctx, c, cl, *workers, f.output == outJSON)
		}
		opts := sim.MatrixOptions{Workers: *workers, Port: *port}
		if f.output == outTable {
			opts.Progress = c.progress
		}
		r, err := sim.RunMatrix(ctx, cl, opts)
		if err != nil {
			return err
		}
		if f.output == outJSON {
			out := struct {
				*sim.Report
				Passed int `json:"passed"`
				Failed int `json:"failed"`
			}{r, r.Passed(), r.Failed()}
			enc := json.NewEncoder(c.stdout)
			enc.SetIndent("", "  ")
			if err := enc.Encode(out); err != nil {
				return err
			}
		} else {
			fmt.Fprintln(c.stdout)
			if _, err := r.WriteTo(c.stdout); err != nil {
				return err
			}
		}
		if r.Failed() > 0 {
			return &exitCodeError{code: exitError}
		}
		return nil
	}
}

func simStatus(fs *flag.FlagSet, f *simFlags) func(context.Context, *cli, []string) error {
	return func(ctx context.Context, c *cli, _ []string) error {
		cl, err := f.load(c)
		if err != nil {
			return err
		}
		health := cl.Health(ctx, 2*time.Second)
		if f.output == outJSON {
			out := struct {
				*sim.Cluster
				Health      []sim.NodeHealth `json:"health"`
				EtcdRunning bool             `json:"etcd_running,omitempty"`
				KubeRunning map[string]bool  `json:"kube_running,omitempty"`
			}{cl, health, cl.EtcdRunning(), cl.KubeRunning()}
			enc := json.NewEncoder(c.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(out)
		}
		fmt.Fprintf(c.stdout, "sim %s: %d nodes, %d pods, registry %s, underlay %s, state in %s\n",
			cl.Name, len(cl.Nodes), len(cl.Pods()), cl.Registry, cl.UnderlayNet, cl.Dir)
		if e := cl.Etcd; e != nil {
			state := "running"
			if !cl.EtcdRunning() {
				state = "NOT RUNNING"
			}
			fmt.Fprintf(c.stdout, "etcd: pid %d %s, %s in %s-u, log %s\n", e.PID, state, e.Endpoint, cl.Name, e.Log)
		}
		if k := cl.Kube; k != nil {
			running := cl.KubeRunning()
			var comps []string
			for _, comp := range k.Components {
				state := "running"
				if !running[comp.Name] {
					state = "NOT RUNNING"
				}
				comps = append(comps, fmt.Sprintf("%s pid %d %s", comp.Name, comp.PID, state))
			}
			fmt.Fprintf(c.stdout, "kube: API server %s in %s (on the underlay at %s), kubeconfig %s\n      %s\n",
				k.URL, k.Netns, cl.KubeUnderlayAddr(), k.Kubeconfig, strings.Join(comps, ", "))
		}
		fmt.Fprintln(c.stdout)
		tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "NODE\tNETNS\tUNDERLAY\tSUBNET\tHOST\tWEFTD\tAPI\tREGISTRY\tPEERS\tPORTS\tUPTIME")
		for _, h := range health {
			n := h.Node
			proc := "pid " + strconv.Itoa(n.PID)
			if !h.Running {
				proc += " (dead)"
			}
			apiState, reg, peers, ports, up := "ok", "-", "-", "-", "-"
			subnet, host := prefix(n.Subnet), addr(n.HostAddr)
			if h.Status != nil {
				s := h.Status
				reg = s.Registry.Backend + ":" + s.Registry.State
				peers, ports, up = strconv.Itoa(s.Peers), strconv.Itoa(s.Ports), age(time.Duration(s.Uptime))
				subnet, host = prefix(s.Subnet), addr(s.HostAddr)
			} else {
				apiState = "down"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
				n.Name, n.Netns, addr(n.Underlay), subnet, host, proc, apiState, reg, peers, ports, up)
		}
		tw.Flush()
		for _, h := range health {
			if h.Error != "" {
				fmt.Fprintf(c.stdout, "  %s: %s (log %s)\n", h.Node.Name, h.Error, h.Node.Log)
			}
		}
		if pods := cl.Pods(); len(pods) > 0 {
			fmt.Fprintln(c.stdout)
			tw = tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "POD\tNODE\tNETNS\tADDRESS\tMAC\tGATEWAY")
			for _, p := range pods {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, p.Node, p.Netns, prefix(p.Address), orDash(p.MAC), addr(p.Gateway))
			}
			tw.Flush()
		}
		return nil
	}
}

func simExec(fs *flag.FlagSet, f *simFlags) func(context.Context, *cli, []string) error {
	return func(ctx context.Context, c *cli, pos []string) error {
		cl, err := f.load(c)
		if err != nil {
			return err
		}
		target, argv := pos[0], pos[1:]
		var netns string
		if p, ok := cl.Pod(target); ok {
			netns = p.Netns
		} else if n, ok := cl.Node(target); ok {
			netns = n.Netns
		} else {
			return &exitCodeError{code: exitError, msg: fmt.Sprintf("weft sim exec: no pod or node %q in sim %s (see weft sim status)", target, cl.Name)}
		}
		// A Ctrl-C reaches the command from the terminal; weft (whose
		// handler runSim set up, not SIG_IGN, which the command would
		// inherit) waits for it and passes its exit status on.
		cmd := sim.Command(context.Background(), netns, argv...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, c.stdout, c.stderr
		err = cmd.Run()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code := ee.ExitCode()
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				code = 128 + int(ws.Signal()) // as a shell reports it
			}
			return &exitCodeError{code: max(code, 1)}
		}
		return err
	}
}

func simNode(cl *sim.Cluster, name string) (*sim.Node, error) {
	n, ok := cl.Node(name)
	if !ok {
		var names []string
		for _, n := range cl.Nodes {
			names = append(names, n.Name)
		}
		return nil, &exitCodeError{code: exitError, msg: fmt.Sprintf("weft sim: no node %q in sim %s (nodes: %s)", name, cl.Name, strings.Join(names, ", "))}
	}
	return n, nil
}

func simKill(fs *flag.FlagSet, f *simFlags) func(context.Context, *cli, []string) error {
	return func(ctx context.Context, c *cli, pos []string) error {
		cl, err := f.load(c)
		if err != nil {
			return err
		}
		n, err := simNode(cl, pos[0])
		if err != nil {
			return err
		}
		pid := n.PID
		if err := cl.Kill(n); err != nil {
			return err
		}
		c.progress("node %s: weftd pid %d killed (SIGKILL); its lease expires within %s, then the others drop its routes. `weft sim restart %s` brings it back",
			n.Name, pid, time.Duration(cl.LeaseTTL), n.Name)
		return nil
	}
}

func simRestart(fs *flag.FlagSet, f *simFlags) func(context.Context, *cli, []string) error {
	return func(ctx context.Context, c *cli, pos []string) error {
		cl, err := f.load(c)
		if err != nil {
			return err
		}
		n, err := simNode(cl, pos[0])
		if err != nil {
			return err
		}
		start := time.Now()
		if err := cl.Restart(ctx, n); err != nil {
			return err
		}
		c.progress("node %s: weftd restarted in %s", n.Name, time.Since(start).Round(10*time.Millisecond))
		return nil
	}
}

func simAddNode(fs *flag.FlagSet, f *simFlags) func(context.Context, *cli, []string) error {
	pods := fs.Int("pods", 0, "`M` how many pods to add on the new node")
	return func(ctx context.Context, c *cli, _ []string) error {
		if *pods < 0 {
			return &usageError{msg: fmt.Sprintf("--pods %d: want 0 or more", *pods)}
		}
		cl, err := f.load(c)
		if err != nil {
			return err
		}
		n, err := cl.AddNode(ctx)
		if err != nil {
			return err
		}
		for range *pods {
			if _, err := cl.AddPod(ctx, n); err != nil {
				return err
			}
		}
		c.progress("node %s added with %d pods", n.Name, *pods)
		return nil
	}
}

func simDown(fs *flag.FlagSet, f *simFlags) func(context.Context, *cli, []string) error {
	return func(ctx context.Context, c *cli, _ []string) error {
		dir := f.stateDir()
		if !sim.Exists(dir) {
			c.progress("sim %s: nothing to do (no record in %s)", f.name, dir)
			if left := sim.StrayNamespaces(f.name); len(left) > 0 {
				return &exitCodeError{code: exitError, msg: fmt.Sprintf("weft sim down: but namespaces %s are named like sim %s's and no record names them; remove them with `ip netns del NAME` if they are leftovers",
					strings.Join(left, ", "), f.name)}
			}
			return nil
		}
		cl, err := f.load(c)
		if err != nil {
			return err
		}
		return cl.Down()
	}
}

// simApply is `weft sim apply -f` (or delete, with del): the objects go
// through the first running node's API.
func simApply(del bool) func(fs *flag.FlagSet, f *simFlags) func(context.Context, *cli, []string) error {
	return func(fs *flag.FlagSet, f *simFlags) func(context.Context, *cli, []string) error {
		file := fs.String("f", "", "`FILE` of YAML or JSON objects, or - for standard input")
		return func(ctx context.Context, c *cli, _ []string) error {
			cl, err := f.load(c)
			if err != nil {
				return err
			}
			docs, err := readDocuments(*file)
			if err != nil {
				return err
			}
			call := cl.Apply
			if del {
				call = cl.DeleteObjects
			}
			res, err := call(ctx, docs)
			if err != nil {
				return err
			}
			c.output = f.output
			return c.emit(res, func(t *table) {
				for _, r := range res {
					t.row(resultLine(r))
				}
			})
		}
	}
}
