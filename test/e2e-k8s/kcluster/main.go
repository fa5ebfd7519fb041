// Command kcluster brings up the two-node Kubernetes cluster of
// internal/kubecluster (real kubelets, containerd, weftd in kube mode,
// weft-cni) for make e2e-k8s, and takes it down.
//
//	kcluster images --tools DIR --out DIR   build the OCI image archives
//	kcluster run [flags] -- CMD ARGS...     up, run CMD inside the control
//	                                        plane's namespace, down
//	kcluster up [flags]                     up, wait for SIGINT/SIGTERM, down
//	kcluster down [--dir DIR]               sweep what a crashed run left
//
// CMD gets KUBECONFIG (the admin's) and runs in the control plane's
// namespace, from which the API server and the nodes are reachable.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/weftnet/weft/internal/kubecluster"
	"github.com/weftnet/weft/netdev"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "images":
		err = images(os.Args[2:])
	case "up", "run":
		err = up(os.Args[1], os.Args[2:])
	case "down":
		fs := flag.NewFlagSet("down", flag.ExitOnError)
		dir := fs.String("dir", "/var/lib/kl-kube", "the cluster's directory")
		fs.Parse(os.Args[2:])
		err = kubecluster.Sweep(*dir)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kcluster:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: kcluster images|up|run|down [flags] (see the package doc)")
	os.Exit(2)
}

func images(args []string) error {
	fs := flag.NewFlagSet("images", flag.ExitOnError)
	tools := fs.String("tools", "bin/tools", "directory holding pause, agnhost and coredns")
	out := fs.String("out", "", "directory to write the archives into")
	fs.Parse(args)
	if *out == "" {
		return errors.New("images: --out is required")
	}
	paths, err := kubecluster.WriteImages(*out, kubecluster.DefaultImageInputs(*tools))
	for _, p := range paths {
		fmt.Println(p)
	}
	return err
}

func up(verb string, args []string) error {
	fs := flag.NewFlagSet(verb, flag.ExitOnError)
	var o kubecluster.Options
	fs.StringVar(&o.Name, "name", "kl", "prefix of every namespace, cgroup root and directory")
	fs.StringVar(&o.Dir, "dir", "", "the cluster's directory (default /var/lib/NAME-kube)")
	fs.IntVar(&o.Nodes, "nodes", 2, "how many nodes")
	fs.StringVar(&o.Tools, "tools", "bin/tools", "directory of the Kubernetes binaries and loopback (make tools e2e-tools)")
	fs.StringVar(&o.Weftd, "weftd", "bin/weftd", "weftd binary")
	fs.StringVar(&o.WeftCNI, "weft-cni", "bin/weft-cni", "weft-cni binary")
	imagesDir := fs.String("images", "", "directory of the OCI image archives (kcluster images)")
	keep := fs.Bool("keep", false, "run: leave the cluster up after CMD (until SIGINT)")
	fs.Parse(args)
	for _, p := range []*string{&o.Tools, &o.Weftd, &o.WeftCNI, imagesDir} {
		if abs, err := filepath.Abs(*p); err == nil {
			*p = abs
		}
	}
	var err error
	if o.Images, err = filepath.Glob(filepath.Join(*imagesDir, "*.tar")); err != nil || len(o.Images) == 0 {
		return fmt.Errorf("no image archives in %q (kcluster images --out)", *imagesDir)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	o.Logf = func(format string, a ...any) { log.Info(fmt.Sprintf(format, a...)) }
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, err := kubecluster.Up(ctx, o)
	if err != nil {
		return err
	}
	for _, t := range c.Timings {
		fmt.Printf("bring-up: %-26s %s\n", t.Phase, t.Took.Round(10*time.Millisecond))
	}
	var runErr error
	if verb == "run" && fs.NArg() > 0 {
		cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + netdev.NetnsPath(c.CP.Netns), "--"}, fs.Args()...)...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		cmd.Env = append(os.Environ(), "KUBECONFIG="+c.CP.Kubeconfig, "KCLUSTER_DIR="+c.Dir)
		runErr = cmd.Run()
	}
	if verb == "up" || *keep {
		fmt.Printf("cluster up: KUBECONFIG=%s (reachable inside netns %s); SIGINT takes it down\n", c.CP.Kubeconfig, c.CP.Netns)
		<-ctx.Done()
	}
	return errors.Join(runErr, c.Down())
}
