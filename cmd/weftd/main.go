// Command weftd is weft's node daemon: one per node, it gives the node's
// pods addresses from the node's subnet, switches and routes their frames,
// and carries traffic to other nodes over VXLAN.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/ipam"
	"github.com/weftnet/weft/node"
	"github.com/weftnet/weft/registry"
	"github.com/weftnet/weft/registry/etcd"
	"github.com/weftnet/weft/registry/file"
	"github.com/weftnet/weft/registry/kube"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	cfg, err := LoadConfig(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(os.Stdout, ConfigUsage())
		return 0
	case err != nil:
		fmt.Fprintln(os.Stderr, err)
		return 2
	case cfg.ShowVersion:
		fmt.Println("weftd", api.BuildVersion())
		return 0
	}
	log := cfg.NewLogger(os.Stderr)
	slog.SetDefault(log)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	reg, err := openRegistry(cfg, log)
	if err != nil {
		log.Error("registry", "err", err)
		return 1
	}
	defer reg.Close()

	var objs registry.ObjectStore
	if p, ok := reg.(registry.ObjectProvider); ok {
		objs = p.Objects()
	}
	vni, port := uint32(cfg.VNI), uint16(cfg.Port)
	n, err := node.New(node.Config{
		NodeName: cfg.NodeName, Underlay: cfg.Underlay,
		ClusterCIDR: cfg.ClusterPrefix(), NodeBits: cfg.NodeMask,
		ServiceCIDR: cfg.ServicePrefix(), Objects: objs,
		VNI: vni, Port: port, MTU: cfg.MTU, StateDir: cfg.StateDir,
		Registry: reg, RegistryBackend: cfg.Registry.Backend, KubePods: cfg.Registry.Backend == BackendKube,
		LeaseTTL: cfg.Registry.TTL, ReleaseOnShutdown: cfg.Registry.ReleaseOnShutdown,
		Logger: log, Offload: cfg.Offload,
		DisableTSO: !cfg.TSO, DisableUSO: !cfg.USO, DisableGRO: !cfg.GRO, PartialCsum: cfg.PartialCsum, ZeroCopy: cfg.ZeroCopy, RxSpin: cfg.RxSpin, RxWorkers: cfg.RxWorkers(), TapQueues: cfg.TapQueues,
		NetnsRoots: cfg.NetnsRoots,
		FloodRate:  cfg.FloodRate, FloodBurst: cfg.FloodBurst,
		ConntrackSize: cfg.ConntrackSize, MaglevSize: cfg.MaglevSize,
		FDBSize: cfg.FDBSize,
		Egress: node.EgressConfig{
			Enabled: cfg.Egress.Enabled, Masquerade: cfg.Egress.Masquerade,
			NonMasqueradeCIDRs:  cfg.Egress.NonMasqueradePrefixes(),
			MasqueradeLinkLocal: cfg.Egress.MasqueradeLinkLocal, KeepIPForward: cfg.Egress.KeepIPForward,
		},
	})
	if err != nil {
		log.Error("node", "err", err)
		return 1
	}
	log.Info("weftd starting", "version", api.BuildVersion(), "node", cfg.NodeName, "config", cfg.File,
		"registry", cfg.Registry.Backend, "state_dir", cfg.StateDir)
	if err := n.Start(ctx); err != nil {
		log.Error("start failed", "err", err)
		return 1
	}
	defer n.Stop()

	srv := api.NewServer(n, log)
	ln, err := api.Listen(cfg.Socket)
	if err != nil {
		log.Error("api socket", "err", err)
		return 1
	}
	go func() {
		if err := srv.Serve(ln); err != nil {
			log.Error("api server", "err", err)
			stop()
		}
	}()
	log.Info("api listening", "socket", cfg.Socket)

	var metrics *api.MetricsServer
	if cfg.MetricsAddr != "" {
		metrics, err = api.ServeMetrics(cfg.MetricsAddr, api.NewRegistry(n), log)
		if err != nil {
			// Metrics are an aid, not the job: forwarding goes on without them.
			log.Error("metrics listener; continuing without metrics", "addr", cfg.MetricsAddr, "err", err)
		} else {
			log.Info("metrics listening", "addr", metrics.Addr().String())
		}
	}

	<-ctx.Done()
	log.Info("shutting down: TAPs, port records and IPAM state stay for the next start")
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	if metrics != nil {
		metrics.Shutdown(sctx)
	}
	return 0
}

// openRegistry opens the configured backend with the cluster's subnet pool.
func openRegistry(cfg Config, log *slog.Logger) (registry.Registry, error) {
	pool, err := ipam.NewSubnetPool(cfg.ClusterPrefix(), cfg.NodeMask)
	if err != nil {
		return nil, err
	}
	opts := registry.Options{Subnets: pool, Logger: log}
	switch cfg.Registry.Backend {
	case BackendEtcd:
		return etcd.Open(etcd.Config{Endpoints: cfg.Registry.Endpoints, Cluster: etcdCluster(cfg.Registry.Prefix), Options: opts})
	case BackendKube:
		// client-go logs through klog: send it to weftd's log.
		klog.SetLogger(logr.FromSlogHandler(log.Handler()))
		return kube.Open(kube.Config{Kubeconfig: cfg.Registry.Kubeconfig, ClusterCIDR: cfg.ClusterPrefix(), Options: opts})
	default:
		return file.Open(file.Config{Dir: cfg.Registry.Dir, Options: opts})
	}
}

// etcdCluster maps the configured key prefix to the backend's cluster name:
// "/weft" (the default) is cluster "default", "/weft/prod" is "prod".
func etcdCluster(prefix string) string {
	p := strings.TrimSuffix(prefix, "/")
	if p == "" || p == "/weft" {
		return "default"
	}
	return path.Base(p)
}
