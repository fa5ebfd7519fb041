package kubecluster

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
)

// The node-side configuration files, as text from a node's paths. The
// settings are the ones ../../shared notes found to work on a cgroups v1
// machine without systemd, with containerd 1.6 and kubelet 1.37.

// nodePaths are a node's files, all under its directory.
type nodePaths struct {
	Dir             string // the node's directory
	ContainerdSock  string
	CNIBin, CNIConf string
	WeftdSock       string
	PendingDir      string
	KubeletRoot     string
	PodLogs         string
	ResolvConf      string
}

func newNodePaths(dir string) nodePaths {
	return nodePaths{
		Dir:            dir,
		ContainerdSock: dir + "/containerd/containerd.sock",
		CNIBin:         dir + "/cni/bin",
		CNIConf:        dir + "/cni/net.d",
		WeftdSock:      dir + "/weft/weftd.sock",
		PendingDir:     dir + "/weft/cni-pending",
		KubeletRoot:    dir + "/kubelet",
		PodLogs:        dir + "/pods",
		ResolvConf:     dir + "/resolv.conf",
	}
}

// ContainerdFiles says where a containerd 1.6 keeps its files and finds
// its CNI plugin, for ContainerdConfig.
type ContainerdFiles struct {
	Dir             string // root, state, opt and runc's root go below it
	Socket          string // the gRPC socket; ttrpc's is Socket + ".ttrpc"
	SandboxImage    string
	CNIBin, CNIConf string
}

// ContainerdConfig is a containerd 1.6 config (version 2) for one node of a
// cluster on this machine: every file under f.Dir, the CRI plugin with the
// node's CNI directories and pod namespaces mounted under its state dir
// (so weftd accepts them with --netns-roots, and teardown unmounts them
// with the rest), and the settings this machine needs (no
// CAP_SYS_RESOURCE: restricted OOM score adjustment; no systemd:
// cgroupfs). cmd/weft-cni's containerd test runs the same config.
func ContainerdConfig(f ContainerdFiles) string {
	d := f.Dir
	return fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[6]q
  netns_mounts_under_state_dir = true
  restrict_oom_score_adj = true
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[7]q
    conf_dir = %[8]q
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = false
      Root = %[9]q
`, d+"/root", d+"/state", f.Socket, f.Socket+".ttrpc", d+"/opt",
		f.SandboxImage, f.CNIBin, f.CNIConf, d+"/runc")
}

// containerdConfig is node p's containerd config.
func containerdConfig(p nodePaths) string {
	return ContainerdConfig(ContainerdFiles{
		Dir: p.Dir + "/containerd", Socket: p.ContainerdSock, SandboxImage: PauseImage,
		CNIBin: p.CNIBin, CNIConf: p.CNIConf,
	})
}

// netnsRoot is where the node's containerd mounts pod namespaces
// (netns_mounts_under_state_dir): weftd's --netns-roots.
func (p nodePaths) netnsRoot() string {
	return p.Dir + "/containerd/state/io.containerd.grpc.v1.cri/netns"
}

// kubeletConfig is a node's KubeletConfiguration (JSON is YAML).
func kubeletConfig(p nodePaths, cgroupRoot string, nodeIP netip.Addr, clusterDNS netip.Addr) (string, error) {
	c := map[string]any{
		"apiVersion": "kubelet.config.k8s.io/v1beta1",
		"kind":       "KubeletConfiguration",
		// 1.37 refuses cgroups v1 unless told; this machine has v1.
		"failCgroupV1": false,
		"failSwapOn":   false,
		"cgroupDriver": "cgroupfs",
		// Each node's pods in a cgroup tree of its own, made before the
		// kubelet starts and removed at teardown.
		"cgroupRoot":               cgroupRoot,
		"containerRuntimeEndpoint": "unix://" + p.ContainerdSock,
		"address":                  nodeIP.String(),
		"readOnlyPort":             0,
		"podLogsDir":               p.PodLogs,
		"resolvConf":               p.ResolvConf,
		"clusterDNS":               []string{clusterDNS.String()},
		"clusterDomain":            "cluster.local",
		// The API server calls the kubelet (exec, logs, port-forward)
		// without a client certificate: anonymous and allowed, as a
		// throwaway test cluster can afford.
		"authentication": map[string]any{
			"anonymous": map[string]any{"enabled": true},
			"webhook":   map[string]any{"enabled": false},
		},
		"authorization": map[string]any{"mode": "AlwaysAllow"},
		// The disk is shared and small: never evict, never collect.
		"evictionHard": map[string]string{
			"memory.available": "1Mi", "nodefs.available": "1%", "nodefs.inodesFree": "1%",
			"imagefs.available": "1%", "imagefs.inodesFree": "1%",
		},
		"imageGCHighThresholdPercent": 100,
		"imageGCLowThresholdPercent":  99,
		"serializeImagePulls":         false,
		// Status reported every 2 s rather than 10 s: a Ready node is seen
		// sooner by the bring-up and the suite.
		"nodeStatusUpdateFrequency": "2s",
		"syncFrequency":             "10s",
	}
	b, err := json.MarshalIndent(c, "", "  ")
	return string(b), err
}

// conflist is the kube-mode CNI configuration (deploy/10-weft.conflist)
// with the node's weftd socket and pending directory.
func conflist(p nodePaths) string {
	b, _ := json.MarshalIndent(map[string]any{
		"cniVersion":  "1.0.0",
		"cniVersions": []string{"1.0.0", "1.1.0"},
		"name":        "weft",
		"plugins": []any{
			map[string]any{
				"type": "weft-cni", "socket": p.WeftdSock, "pendingDir": p.PendingDir,
				"capabilities": map[string]bool{"portMappings": true},
			},
		},
	}, "", "  ")
	return string(b)
}

// corefile serves cluster.local from the API (through kubeconfig) and
// nothing else: the machine has no resolver the pods could reach.
func corefile(kubeconfig string) string {
	return `.:53 {
    errors
    health :8080
    ready :8181
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig ` + kubeconfig + `
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    cache 30
    loop
    reload
}
`
}

// kubeletArgs are the kubelet's flags.
func kubeletArgs(p nodePaths, config, kubeconfig, node string, nodeIP netip.Addr) []string {
	return []string{
		"--config=" + config,
		"--kubeconfig=" + kubeconfig,
		"--root-dir=" + p.KubeletRoot,
		"--hostname-override=" + node,
		"--node-ip=" + nodeIP.String(),
		"--v=1",
	}
}

// cgroupName is the cgroup root of a node: every path component of the
// machine's cgroup trees that this cluster makes starts with its name.
func cgroupName(cluster, node string) string {
	return "/" + cluster + "-" + strings.TrimPrefix(node, cluster+"-")
}
