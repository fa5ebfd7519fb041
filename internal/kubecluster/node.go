package kubecluster

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/weftnet/weft/internal/kubecp"
	"github.com/weftnet/weft/netdev"
)

// startNode makes node n's namespace, joins it to the underlay, and
// starts containerd (then imports the images), weftd and the kubelet.
func (c *Cluster) startNode(ctx context.Context, n *Node) error {
	p := n.paths
	for _, d := range []string{p.Dir, p.CNIBin, p.CNIConf, p.PendingDir, p.KubeletRoot, p.PodLogs, filepath.Dir(p.ContainerdSock), filepath.Dir(p.WeftdSock)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if _, err := netdev.NewNetns(n.Netns); err != nil {
		return err
	}
	if err := netdev.NewVeth(
		netdev.VethEnd{Name: "u0", NetnsPath: netdev.NetnsPath(n.Netns), Addr: netip.PrefixFrom(n.Address, UnderlayNet.Bits())},
		netdev.VethEnd{Name: n.Name, NetnsPath: netdev.NetnsPath(c.Name + "-u")},
	); err != nil {
		return fmt.Errorf("underlay: %w", err)
	}
	if err := nsRun(c.Name+"-u", "ip", "link", "set", n.Name, "master", "br0", "up"); err != nil {
		return err
	}
	if err := netdev.AddRoute(netdev.NetnsPath(n.Netns), "u0", netip.PrefixFrom(kubecp.APIAddr, 32), c.cpUnderlayAddr()); err != nil {
		return fmt.Errorf("route to the API: %w", err)
	}
	// NodePort through another node forwards: a new namespace has
	// ip_forward off.
	if err := nsRun(n.Netns, "sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
		return err
	}
	if err := makeCgroup(cgroupName(c.Name, n.Name)); err != nil {
		return err
	}
	if err := c.writeNodeFiles(n); err != nil {
		return err
	}
	if _, err := c.start(n.Name+"-containerd", n.Netns, "containerd", "--config", filepath.Join(p.Dir, "containerd.toml"), "--log-level", "warn"); err != nil {
		return err
	}
	if err := waitFor(ctx, 30*time.Second, func() error {
		return exec.Command("ctr", "-a", p.ContainerdSock, "version").Run()
	}); err != nil {
		return fmt.Errorf("containerd not serving: %w", err)
	}
	// weftd and the kubelet start while the images import: the kubelet
	// registers the Node, the controller manager gives it a podCIDR, and
	// weftd takes its subnet from it.
	if _, err := c.start(n.Name+"-weftd", n.Netns, c.opts.Weftd,
		"--node-name", n.Name, "--underlay", n.Address.String(),
		"--registry", "kube", "--kubeconfig", c.CP.Kubeconfig,
		"--cluster-cidr", ClusterCIDR.String(), "--service-cidr", ServiceCIDR.String(),
		"--state-dir", filepath.Join(p.Dir, "weft"), "--socket", p.WeftdSock,
		"--netns-roots", p.netnsRoot(), "--metrics-addr", "off"); err != nil {
		return err
	}
	imported := make(chan error, 1)
	go func() { imported <- importImages(ctx, p.ContainerdSock, c.opts.Images) }()
	if err := <-imported; err != nil {
		return err
	}
	_, err := c.start(n.Name+"-kubelet", n.Netns, filepath.Join(c.opts.Tools, "kubelet"),
		kubeletArgs(p, filepath.Join(p.Dir, "kubelet.json"), c.CP.Kubeconfig, n.Name, n.Address)...)
	return err
}

func (c *Cluster) writeNodeFiles(n *Node) error {
	p := n.paths
	kc, err := kubeletConfig(p, cgroupName(c.Name, n.Name), n.Address, ClusterDNS)
	if err != nil {
		return err
	}
	files := map[string]string{
		filepath.Join(p.Dir, "containerd.toml"):      containerdConfig(p),
		filepath.Join(p.Dir, "kubelet.json"):         kc,
		filepath.Join(p.CNIConf, "10-weft.conflist"): conflist(p),
		p.ResolvConf: "",
	}
	for path, text := range files {
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			return err
		}
	}
	// The CNI plugins: weft-cni, and loopback (containerd's CRI brings
	// every sandbox's lo up through it).
	for name, src := range map[string]string{"weft-cni": c.opts.WeftCNI, "loopback": filepath.Join(c.opts.Tools, "loopback")} {
		b, err := os.ReadFile(src)
		if err != nil {
			return fmt.Errorf("CNI plugin %s: %w", name, err)
		}
		if err := os.WriteFile(filepath.Join(p.CNIBin, name), b, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// importImages imports the OCI archives into containerd's k8s.io
// namespace, where the CRI finds them.
func importImages(ctx context.Context, sock string, images []string) error {
	for _, img := range images {
		ictx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		out, err := exec.CommandContext(ictx, "ctr", "-a", sock, "-n", "k8s.io", "images", "import", img).CombinedOutput()
		cancel()
		if err != nil {
			return fmt.Errorf("import %s: %w: %s", img, err, out)
		}
	}
	return nil
}

// makeCgroup makes the node's cgroup root in every hierarchy, with the
// cpuset hierarchy's cpus and mems copied from its parent (a new cpuset
// cgroup has none, and nothing could run in it).
func makeCgroup(cg string) error {
	for _, d := range cgroupDirs(cg) {
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("cgroup %s: %w", d, err)
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			b, err := os.ReadFile(filepath.Join(filepath.Dir(d), f))
			if err != nil {
				continue // not the cpuset hierarchy
			}
			if err := os.WriteFile(filepath.Join(d, f), b, 0o644); err != nil {
				return fmt.Errorf("cgroup %s: %s: %w", d, f, err)
			}
		}
	}
	return nil
}

// waitNodesReady waits until n Nodes report Ready.
func waitNodesReady(ctx context.Context, cs kubernetes.Interface, n int, timeout time.Duration) error {
	return waitFor(ctx, timeout, func() error {
		nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		ready := 0
		for _, nd := range nodes.Items {
			for _, cond := range nd.Status.Conditions {
				if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
					ready++
				}
			}
		}
		if ready < n {
			return fmt.Errorf("%d of %d nodes Ready", ready, n)
		}
		return nil
	})
}

// waitFor polls check every 100 ms until it returns nil, timeout passes
// or ctx ends; the error carries check's last error.
func waitFor(ctx context.Context, timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
