package sim

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/deploy"
	"github.com/weftnet/weft/internal/kubecp"
	"github.com/weftnet/weft/internal/procstat"
	"github.com/weftnet/weft/netdev"
)

// The sim with the kube registry (Options.Registry "kube"): a Kubernetes
// control plane (internal/kubecp: etcd, kube-apiserver and
// kube-controller-manager, which allocates the nodes' pod CIDRs out of the
// cluster CIDR) runs in namespace NAME-k, joined to the underlay bridge
// like a machine of the cluster (KubeUnderlayAddr, .2), and every node
// reaches the API server at kubecp.APIAddr through a route over the
// underlay. Each weftd runs with --registry kube as deploy/weft.yaml's
// ServiceAccount, with its least-privilege ClusterRole
// (kubeWeftdIdentity). Before a node's weftd starts, the sim writes its
// Node object, so the node takes its subnet from spec.podCIDR; for each pod it
// attaches it writes a Pod object (spec.nodeName, labels, named ports)
// before the attach and its status (podIP, Running, Ready) after, as a
// kubelet would, so the EndpointSlice controller gives Services with
// selectors their endpoints. Apply and DeleteObjects go to the API server
// (kubeobjects.go). Down stops the control plane by PID with the rest.

// Cluster CIDR and Service CIDR of a kube sim: weftd's defaults, so its
// command line needs neither.
var (
	kubeClusterCIDR = netip.MustParsePrefix("10.244.0.0/16")
	kubeServiceCIDR = netip.MustParsePrefix("10.96.0.0/12")
)

// RegistryKube is Options.Registry for a sim driven by Kubernetes.
const RegistryKube = "kube"

// kubeFieldManager is the sim's field manager in the API server.
const kubeFieldManager = "weft-sim"

// KubeBinaries are the control plane's binaries in dir: etcd,
// kube-apiserver and kube-controller-manager (what `make tools` links into
// bin/tools). An empty dir means kubecp.FindBinaries ($WEFT_TOOLS, or
// bin/tools of the module in the working directory).
func KubeBinaries(dir string) kubecp.Binaries {
	if dir == "" {
		return kubecp.FindBinaries()
	}
	return kubecp.Binaries{
		Etcd:              filepath.Join(dir, "etcd"),
		APIServer:         filepath.Join(dir, "kube-apiserver"),
		ControllerManager: filepath.Join(dir, "kube-controller-manager"),
	}
}

func (c *Cluster) kubeNS() string  { return c.Name + "-k" }
func (c *Cluster) kubeDir() string { return filepath.Join(c.Dir, "kube") }

// KubeUnderlayAddr is the control plane's address on the underlay (.2).
func (c *Cluster) KubeUnderlayAddr() netip.Addr {
	a := c.UnderlayNet.Addr().As4()
	a[3] = 2
	return netip.AddrFrom4(a)
}

// kubeNodeName is node n's Node object's name: weftd's --node-name.
func (c *Cluster) kubeNodeName(n *Node) string { return c.Name + "-" + n.Name }

// startKube starts the control plane and joins it to the underlay. The
// record names its namespace and directory before anything is made, so
// Down finds them after a crash half-way.
func (c *Cluster) startKube(ctx context.Context) error {
	c.Kube = &kubecp.ControlPlane{Netns: c.kubeNS(), Dir: c.kubeDir()}
	if err := c.save(); err != nil {
		return err
	}
	start := time.Now()
	cp, err := kubecp.Start(kubecp.Options{
		Netns: c.kubeNS(), Dir: c.kubeDir(), ControllerManager: true,
		ClusterCIDR: kubeClusterCIDR, NodeCIDRMaskSize: 24, ServiceCIDR: kubeServiceCIDR,
		StartTimeout: time.Minute,
		// `weft sim up` hands the control plane to `weft sim down`; a
		// test's dies with the test binary.
		Detach: !c.dieWithCaller,
	}, c.kubeBins)
	if err != nil {
		return fmt.Errorf("kube: %w", err)
	}
	c.Kube = cp
	if err := c.save(); err != nil {
		return err
	}
	c.logf("kube: control plane in namespace %s (%s), API server %s, %.1f s", cp.Netns, cp.StartTimes(), cp.URL, time.Since(start).Seconds())
	if err := netdev.NewVeth(
		netdev.VethEnd{Name: "u0", NetnsPath: cp.NetnsPath(), Addr: netip.PrefixFrom(c.KubeUnderlayAddr(), c.UnderlayNet.Bits())},
		netdev.VethEnd{Name: "k", NetnsPath: netdev.NetnsPath(c.underlayNS())},
	); err != nil {
		return fmt.Errorf("kube: underlay link: %w", err)
	}
	if err := runIn(c.underlayNS(), "ip", "link", "set", "k", "master", "br0", "up"); err != nil {
		return err
	}
	cs, err := c.kubeClient()
	if err != nil {
		return err
	}
	if err := c.kubeWeftdIdentity(ctx, cs); err != nil {
		return err
	}
	// The namespace sim pods are attached in by default.
	return ensureKubeNamespace(ctx, cs, PodNamespace)
}

// kubeWeftdTokenTTL is how long the weftds' ServiceAccount token is valid:
// longer than any sim stays up.
const kubeWeftdTokenTTL = 365 * 24 * time.Hour

// kubeWeftdIdentity gives the weftds deploy/'s identity: the Namespace,
// ServiceAccount, ClusterRole and ClusterRoleBinding of deploy/weft.yaml
// are created as written, and WeftdKubeconfig authenticates as that
// ServiceAccount. So the sim's weftds run with exactly the least-privilege
// rights a cluster install grants them, and whatever they need beyond
// those fails here as it would there.
func (c *Cluster) kubeWeftdIdentity(ctx context.Context, cs kubernetes.Interface) error {
	var ns, sa string
	for _, doc := range strings.Split(string(deploy.Manifest), "\n---\n") {
		var probe struct {
			Kind     string
			Metadata struct{ Name, Namespace string }
		}
		if err := yaml.Unmarshal([]byte(doc), &probe); err != nil {
			return fmt.Errorf("kube: deploy/weft.yaml: %w", err)
		}
		var err error
		switch probe.Kind {
		case "Namespace":
			var o corev1.Namespace
			if err = yaml.UnmarshalStrict([]byte(doc), &o); err == nil {
				_, err = cs.CoreV1().Namespaces().Create(ctx, &o, metav1.CreateOptions{FieldManager: kubeFieldManager})
			}
		case "ServiceAccount":
			var o corev1.ServiceAccount
			if err = yaml.UnmarshalStrict([]byte(doc), &o); err == nil {
				ns, sa = o.Namespace, o.Name
				_, err = cs.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, &o, metav1.CreateOptions{FieldManager: kubeFieldManager})
			}
		case "ClusterRole":
			var o rbacv1.ClusterRole
			if err = yaml.UnmarshalStrict([]byte(doc), &o); err == nil {
				_, err = cs.RbacV1().ClusterRoles().Create(ctx, &o, metav1.CreateOptions{FieldManager: kubeFieldManager})
			}
		case "ClusterRoleBinding":
			var o rbacv1.ClusterRoleBinding
			if err = yaml.UnmarshalStrict([]byte(doc), &o); err == nil {
				_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, &o, metav1.CreateOptions{FieldManager: kubeFieldManager})
			}
		default:
			continue // the ConfigMap and DaemonSet are for a real cluster
		}
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("kube: deploy/weft.yaml %s %s: %w", probe.Kind, probe.Metadata.Name, err)
		}
	}
	if sa == "" {
		return errors.New("kube: deploy/weft.yaml has no ServiceAccount")
	}
	_, path, err := c.Kube.ServiceAccountConfigFor(ctx, ns, sa, kubeWeftdTokenTTL)
	if err != nil {
		return fmt.Errorf("kube: weftd's kubeconfig: %w", err)
	}
	c.WeftdKubeconfig = path
	c.logf("kube: weftds run as serviceaccount %s/%s with deploy/weft.yaml's ClusterRole (kubeconfig %s)", ns, sa, path)
	return c.save()
}

// kubeClient is the admin's clientset, dialing from inside the control
// plane's namespace (so it works from the root namespace too).
func (c *Cluster) kubeClient() (kubernetes.Interface, error) {
	if c.Kube == nil {
		return nil, fmt.Errorf("sim %s: registry %s has no Kubernetes API server", c.Name, c.Registry)
	}
	if c.kubeCS != nil {
		return c.kubeCS, nil
	}
	cs, err := c.Kube.Clientset()
	if err != nil {
		return nil, fmt.Errorf("kube: client: %w", err)
	}
	c.kubeCS = cs
	return cs, nil
}

// kubeRouteNode gives node n a route to the API server over the underlay.
func (c *Cluster) kubeRouteNode(n *Node) error {
	if err := netdev.AddRoute(netdev.NetnsPath(n.Netns), "u0", netip.PrefixFrom(kubecp.APIAddr, 32), c.KubeUnderlayAddr()); err != nil {
		return fmt.Errorf("node %s: route to the API server: %w", n.Name, err)
	}
	return nil
}

// createKubeNode writes node n's Node object, which kube-controller-manager
// gives a pod CIDR; weftd waits for it when it acquires its lease.
func (c *Cluster) createKubeNode(ctx context.Context, n *Node) error {
	cs, err := c.kubeClient()
	if err != nil {
		return err
	}
	name := c.kubeNodeName(n)
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{corev1.LabelHostname: name}}}
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if _, err := cs.CoreV1().Nodes().Create(cctx, node, metav1.CreateOptions{FieldManager: kubeFieldManager}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("node %s: create Node %s: %w", n.Name, name, err)
	}
	return nil
}

// ensureKubeNamespace creates namespace ns if it is missing and waits for
// its `default` ServiceAccount, without which ServiceAccount admission
// refuses Pods.
func ensureKubeNamespace(ctx context.Context, cs kubernetes.Interface, ns string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{FieldManager: kubeFieldManager})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("kube: create namespace %s: %w", ns, err)
	}
	for {
		_, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		if err == nil {
			return nil
		}
		if !apierrors.IsNotFound(err) || ctx.Err() != nil {
			return fmt.Errorf("kube: namespace %s: its default ServiceAccount: %w", ns, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// createKubePod writes the Pod object of sim pod p (Kubernetes namespace
// ns, name name) on node n, as the scheduler and kubelet would have before
// the CNI plugin runs: weftd takes its labels and named ports from it.
func (c *Cluster) createKubePod(ctx context.Context, n *Node, p *Pod, ns, name string, meta api.PodMeta) error {
	cs, err := c.kubeClient()
	if err != nil {
		return err
	}
	if err := ensureKubeNamespace(ctx, cs, ns); err != nil {
		return err
	}
	ctr := corev1.Container{Name: "sim", Image: "weft-sim/none", ImagePullPolicy: corev1.PullNever}
	for _, cp := range meta.ContainerPorts {
		proto := corev1.Protocol(cp.Protocol)
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		ctr.Ports = append(ctr.Ports, corev1.ContainerPort{Name: cp.Name, ContainerPort: int32(cp.Port), Protocol: proto})
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: meta.Labels,
			Annotations: map[string]string{"weftnet.io/sim-pod": c.Name + "/" + p.Name}},
		Spec: corev1.PodSpec{NodeName: c.kubeNodeName(n), Containers: []corev1.Container{ctr},
			AutomountServiceAccountToken: new(bool)},
	}
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if _, err := cs.CoreV1().Pods(ns).Create(cctx, pod, metav1.CreateOptions{FieldManager: kubeFieldManager}); err != nil {
		return fmt.Errorf("pod %s: create Pod %s/%s: %w", p.Name, ns, name, err)
	}
	return nil
}

// kubePodRunning writes the status of pod p's Pod object once it is
// attached: Running and Ready with its address, as a kubelet reports it.
func (c *Cluster) kubePodRunning(ctx context.Context, n *Node, p *Pod, ns, name string) error {
	cs, err := c.kubeClient()
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	pod, err := cs.CoreV1().Pods(ns).Get(cctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("pod %s: get Pod %s/%s: %w", p.Name, ns, name, err)
	}
	now := metav1.Now()
	ip := p.IP().String()
	pod.Status = corev1.PodStatus{
		Phase:  corev1.PodRunning,
		HostIP: n.Underlay.String(), HostIPs: []corev1.HostIP{{IP: n.Underlay.String()}},
		PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
		StartTime: &now,
	}
	for _, t := range []corev1.PodConditionType{corev1.PodScheduled, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady} {
		pod.Status.Conditions = append(pod.Status.Conditions, corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: now})
	}
	if _, err := cs.CoreV1().Pods(ns).UpdateStatus(cctx, pod, metav1.UpdateOptions{FieldManager: kubeFieldManager}); err != nil {
		return fmt.Errorf("pod %s: status of Pod %s/%s: %w", p.Name, ns, name, err)
	}
	return nil
}

// stopKube stops the control plane the record names (by PID, only
// processes whose command line names its directory) and deletes its
// namespace, also when the record was written before it started.
func (c *Cluster) stopKube() error {
	var errs []error
	if c.Kube != nil {
		c.logf("kube: stopping the control plane in %s", c.Kube.Netns)
		if err := c.Kube.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("kube: %w", err))
		}
	}
	// Components a crash left unrecorded (between start and save). A
	// control plane has nothing to flush: SIGKILL, as kubecp's own Stop.
	for _, pid := range kubeProcs(c.kubeDir()) {
		c.logf("kube: killing pid %d (not in the record)", pid)
		start := procStartTime(pid)
		syscall.Kill(pid, syscall.SIGKILL)
		waitReaped(pid, start, 5*time.Second)
	}
	if err := netdev.DeleteNetns(c.kubeNS()); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// kubeProcs lists the live processes whose command line names dir.
func kubeProcs(dir string) []int {
	var out []int
	for _, pid := range procstat.PIDs() {
		if pidAlive(pid) && kubecp.Owns(pid, dir) {
			out = append(out, pid)
		}
	}
	return out
}

// KubeRunning reports, for each control-plane component, whether it runs.
func (c *Cluster) KubeRunning() map[string]bool {
	if c.Kube == nil {
		return nil
	}
	out := map[string]bool{}
	for _, comp := range c.Kube.Components {
		out[comp.Name] = pidAlive(comp.PID) && kubecp.Owns(comp.PID, c.Kube.Dir)
	}
	return out
}
