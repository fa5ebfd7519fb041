package sim

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/internal/testenv"
	"github.com/weftnet/weft/netdev"
)

// newKubeCluster is newTestCluster with the kube registry: under CI a
// missing control-plane binary fails the test (`make test` links them).
func newKubeCluster(t *testing.T) *Cluster {
	t.Helper()
	testenv.RequireRoot(t)
	if err := KubeBinaries("").Check(true); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%v; CI=%q is set: run the tests through `make test` (WEFT_TOOLS)", err, os.Getenv("CI"))
		}
		t.Skip(err)
	}
	c := newTestCluster(t, Options{Name: testenv.UniqueName("ks"), Registry: RegistryKube, Outside: true, Helper: testHelper(t)})
	t.Cleanup(func() {
		if t.Failed() && c.Kube != nil {
			t.Logf("control plane logs:\n%s", c.Kube.LogTails(20))
		}
	})
	return c
}

// TestKubeSim: a sim driven by a real control plane (etcd, kube-apiserver,
// kube-controller-manager): the nodes take their subnets from their Nodes'
// spec.podCIDR, the connectivity matrix passes, a Service with a selector
// reaches every backend by the cluster IP the API server gave it (its
// EndpointSlice made by the controller manager from the Pods' status) and
// follows a Pod's readiness, and a NetworkPolicy denies, then allows once a
// client Pod is relabelled, and denies again when the label goes. The
// weftds run with deploy/'s rights, and `weft apply` through one is
// refused with a message saying what to do.
func TestKubeSim(t *testing.T) {
	c := newKubeCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	if err := c.Up(ctx, 2, 2); err != nil {
		t.Fatal(err)
	}
	t.Logf("kube sim up in %.1f s", time.Since(start).Seconds())
	cs, err := c.kubeClient()
	if err != nil {
		t.Fatal(err)
	}

	// Subnets are the controller manager's.
	for _, n := range c.Nodes {
		node, err := cs.CoreV1().Nodes().Get(ctx, c.kubeNodeName(n), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if node.Spec.PodCIDR == "" || node.Spec.PodCIDR != n.Subnet.String() {
			t.Errorf("node %s: subnet %s, Node spec.podCIDR %q: want them equal", n.Name, n.Subnet, node.Spec.PodCIDR)
		}
	}

	// The example Service (selector app=sim, a fixed cluster IP), applied to
	// the API server; its endpoints are the controller manager's slice.
	if err := c.ApplyExample(ctx); err != nil {
		t.Fatal(err)
	}
	slices, err := cs.DiscoveryV1().EndpointSlices(PodNamespace).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=echo"})
	if err != nil || len(slices.Items) == 0 || slices.Items[0].Labels[discoveryv1.LabelManagedBy] != "endpointslice-controller.k8s.io" {
		t.Errorf("EndpointSlices of sim/echo: %v %+v, want one managed by the endpointslice controller", err, slices)
	}

	// A Service without a cluster IP gets one from the API server.
	const auto = "apiVersion: v1\nkind: Service\nmetadata: {name: auto, namespace: sim}\nspec:\n  selector: {app: sim}\n  ports: [{port: 81, targetPort: 7777}]\n"
	res, err := c.Apply(ctx, auto)
	if err != nil || len(res) != 1 || res[0].Action != api.ActionCreated {
		t.Fatalf("apply a Service without a cluster IP: %+v %v, want it created", res, err)
	}
	if again, err := c.Apply(ctx, auto); err != nil || len(again) != 1 || again[0].Action != api.ActionConfigured || again[0].ClusterIP != res[0].ClusterIP {
		t.Errorf("apply it again: %+v %v, want configured with cluster IP %s", again, err, res[0].ClusterIP)
	}
	if ip, err := netip.ParseAddr(res[0].ClusterIP); err != nil || !kubeServiceCIDR.Contains(ip) {
		t.Errorf("Service sim/auto cluster IP %q: want one the API server allocated in %s", res[0].ClusterIP, kubeServiceCIDR)
	}

	// The weftds run with deploy/'s least-privilege rights: enough for all
	// of the above and below, not for `weft apply` through them, which
	// says what was refused and what to do.
	nc := api.NewClient(c.Nodes[0].Socket)
	defer nc.Close()
	_, err = nc.Apply(ctx, api.ApplyRequest{Documents: "apiVersion: v1\nkind: Service\nmetadata: {name: denied, namespace: sim}\nspec:\n  ports: [{port: 80}]\n"})
	for _, want := range []string{`may not patch (and create, for a new object) services in namespace "sim"`, "kubectl apply -f", `grant weftd's ServiceAccount "patch, create" on services`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("weft apply through a least-privilege weftd: %v; want an error saying %q", err, want)
		}
	}
	var re *api.RemoteError
	if !errors.As(err, &re) || re.Status != http.StatusForbidden || !errors.Is(err, api.ErrForbidden) {
		t.Errorf("weft apply through a least-privilege weftd: %#v; want the API's 403 %q", err, api.CodeForbidden)
	}

	r, err := RunMatrix(ctx, c, MatrixOptions{Helper: testHelper(t), Progress: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	var services int
	for _, ch := range r.Checks {
		if ch.Name == "service" && ch.Error == "" {
			services++
		}
	}
	t.Logf("matrix: %s; %d service checks passed", r.Summary(), services)
	var report strings.Builder
	r.WriteTo(&report)
	if r.Failed() > 0 {
		t.Errorf("matrix failed:\n%s", report.String())
	}
	if !strings.Contains(report.String(), "(registry kube, ") {
		t.Errorf("the report does not say registry kube:\n%s", report.String())
	}
	if want := len(c.Pods()) + len(c.Nodes); services != want {
		t.Errorf("%d service checks passed, want %d (every node and pod)", services, want)
	}

	kubeAPIFromPods(ctx, t, c)
	kubeReadinessFlip(ctx, t, c)
	kubePolicyFlip(ctx, t, c)
}

// kubeAPIFromPods: every pod reaches the API server through the
// `kubernetes` Service (10.96.0.1:443), as in-cluster clients (CoreDNS,
// operators) do: its endpoint is the API server's own address, outside the
// cluster CIDR, so the flow leaves through the node's stack after the
// service stage's DNAT. Any HTTP answer over TLS proves the path (the
// request carries no credentials).
func kubeAPIFromPods(ctx context.Context, t *testing.T, c *Cluster) {
	t.Helper()
	const front = "10.96.0.1:443"
	for _, p := range c.Pods() {
		hc := &http.Client{
			Timeout: 5 * time.Second,
			Transport: &http.Transport{
				DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
					return DialIn(ctx, p.Netns, "tcp4", addr)
				},
				// The API server's certificate names it, not what a
				// test pod trusts; the point is the path, not the peer.
				TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
			},
		}
		resp, err := hc.Get("https://" + front + "/version")
		if err != nil {
			t.Errorf("pod %s -> the kubernetes Service %s: %v", p.Name, front, err)
			continue
		}
		resp.Body.Close()
		hc.CloseIdleConnections()
		t.Logf("pod %s -> the kubernetes Service %s: HTTP %d from the API server", p.Name, front, resp.StatusCode)
	}
}

// kubeReadinessFlip: a Pod whose Ready condition turns False leaves the
// Service's ready endpoints (the EndpointSlice controller marks it not
// ready, every weftd follows), and comes back when it is Ready again.
func kubeReadinessFlip(ctx context.Context, t *testing.T, c *Cluster) {
	cs, err := c.kubeClient()
	if err != nil {
		t.Fatal(err)
	}
	p := c.Nodes[1].Pods[1]
	setReady := func(status corev1.ConditionStatus) {
		t.Helper()
		pod, err := cs.CoreV1().Pods(PodNamespace).Get(ctx, p.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for i, cond := range pod.Status.Conditions {
			if cond.Type == corev1.PodReady || cond.Type == corev1.ContainersReady {
				pod.Status.Conditions[i].Status = status
			}
		}
		if _, err := cs.CoreV1().Pods(PodNamespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	all := len(c.Pods())
	setReady(corev1.ConditionFalse)
	if err := c.WaitService(ctx, ExampleServiceName, all-1, 15*time.Second); err != nil {
		t.Errorf("pod %s not ready: %v", p.Name, err)
	}
	setReady(corev1.ConditionTrue)
	if err := c.WaitService(ctx, ExampleServiceName, all, 15*time.Second); err != nil {
		t.Errorf("pod %s ready again: %v", p.Name, err)
	}
}

// kubePolicyFlip: n2-p1 serves TCP 8080; a policy lets only pods labelled
// role=client in. n1-p1 is denied, allowed once its Pod is relabelled
// through `sim apply`, and denied again when the label goes.
func kubePolicyFlip(ctx context.Context, t *testing.T, c *Cluster) {
	client, server := c.Nodes[0].Pods[0], c.Nodes[1].Pods[0]
	ln, err := ListenIn(server.Netns, "tcp4", ":8080")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go acceptAndClose(ln)
	dst := netip.AddrPortFrom(server.IP(), 8080)
	// probe waits (bounded) until the verdict is want: label changes reach
	// every weftd one informer event later.
	probe := func(step string, want bool) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			got := ProbeTCP(ctx, client.Netns, dst, time.Second)
			if got == want {
				t.Logf("policy: %s: allowed=%v", step, got)
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("policy: %s: allowed=%v, want %v", step, got, want)
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	probe("no policy", true)
	tcp := corev1.ProtocolTCP
	pol := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: PodNamespace, Name: "only-clients"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"sim-pod": server.Name}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "client"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp}},
			}},
		},
	}
	applied := map[string]string{}
	if err := c.applyPolicies(ctx, []*networkingv1.NetworkPolicy{pol}, applied, nil); err != nil {
		t.Fatal(err)
	}
	probe("policy, client unlabelled", false)
	relabel := func(extra string) {
		t.Helper()
		doc := fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata:\n  name: %s\n  namespace: %s\n  labels: {app: sim, sim-pod: %s%s}\n",
			client.Name, PodNamespace, client.Name, extra)
		if _, err := c.Apply(ctx, doc); err != nil {
			t.Fatalf("relabel %s: %v", client.Name, err)
		}
	}
	relabel(", role: client")
	probe("client labelled role=client", true)
	relabel("")
	probe("label removed", false)
	if err := c.applyPolicies(ctx, nil, applied, nil); err != nil {
		t.Fatal(err)
	}
	probe("policy deleted", true)
}

// TestKubeSimDownAfterCrash: a kube sim whose starter died half-way (the
// record names the control plane, its processes run) is removed by Down
// from the record alone: the components are killed by PID, the control
// plane's namespace and directory are gone.
func TestKubeSimDownAfterCrash(t *testing.T) {
	c := newKubeCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.Up(ctx, 1, 0); err != nil {
		t.Fatal(err)
	}
	pids := []int{}
	for _, comp := range c.Kube.Components {
		pids = append(pids, comp.PID)
	}
	// A later process: the record only.
	later, err := Load(c.Dir)
	if err != nil {
		t.Fatal(err)
	}
	later.SetProgress(func(format string, args ...any) { t.Logf("later: "+format, args...) })
	later.Kube.Components = later.Kube.Components[:1] // as if the crash came before the rest were recorded
	if err := later.Down(); err != nil {
		t.Fatalf("down: %v", err)
	}
	for _, pid := range pids {
		if pidAlive(pid) {
			t.Errorf("control plane pid %d still running after down", pid)
		}
	}
	if _, err := os.Stat(netdev.NetnsPath(c.kubeNS())); !os.IsNotExist(err) {
		t.Errorf("namespace %s: %v, want it gone", c.kubeNS(), err)
	}
	if _, err := os.Stat(filepath.Join(c.Dir, "kube")); !os.IsNotExist(err) {
		t.Errorf("%s: %v, want it gone", filepath.Join(c.Dir, "kube"), err)
	}
}

// TestKubeSimAPIServerOutage: with the API server frozen (SIGSTOP: its
// connections hang, as behind a partition, rather than being refused),
// every weftd keeps forwarding with what it last knew (the matrix and the
// Service pass) and says so in `weft status` (registry degraded); once it
// answers again, every weftd reports ok and follows a change made after
// the outage.
func TestKubeSimAPIServerOutage(t *testing.T) {
	c := newKubeCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := c.Up(ctx, 2, 1); err != nil {
		t.Fatal(err)
	}
	if err := c.ApplyExample(ctx); err != nil {
		t.Fatal(err)
	}
	var apiserver int
	for _, comp := range c.Kube.Components {
		if comp.Name == "kube-apiserver" {
			apiserver = comp.PID
		}
	}
	if apiserver == 0 {
		t.Fatalf("no kube-apiserver among the control plane's components %+v", c.Kube.Components)
	}
	if err := syscall.Kill(apiserver, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	frozen := time.Now()
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			if err := syscall.Kill(apiserver, syscall.SIGCONT); err != nil {
				t.Errorf("SIGCONT kube-apiserver %d: %v", apiserver, err)
			}
		}
	}
	defer resume()

	registryStates := func(want string) (bool, string) {
		var got []string
		ok := true
		for _, n := range c.Nodes {
			st := nodeStatus(t, n)
			got = append(got, fmt.Sprintf("%s %s (%s)", n.Name, st.Registry.State, st.Registry.LastError))
			ok = ok && st.Registry.State == want
		}
		return ok, strings.Join(got, "; ")
	}
	waitState := func(want string, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			ok, got := registryStates(want)
			if ok {
				t.Logf("every node reports registry %s, %s after the freeze: %s", want, time.Since(frozen).Round(100*time.Millisecond), got)
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("registry state: %s; want %s on every node within %s", got, want, within)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	waitState(api.RegistryDegraded, 60*time.Second)

	r, err := RunMatrix(ctx, c, MatrixOptions{Helper: testHelper(t), Progress: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	var report strings.Builder
	r.WriteTo(&report)
	if r.Failed() > 0 {
		t.Errorf("matrix with the API server frozen:\n%s", report.String())
	}
	t.Logf("API server frozen: %s", r.Summary())

	resume()
	waitState(api.RegistryOK, 60*time.Second)
	// A change made after the outage reaches every weftd: the informers
	// watch again.
	const late = "apiVersion: v1\nkind: Service\nmetadata: {name: late, namespace: sim}\nspec:\n  selector: {app: sim}\n  ports: [{port: 82, targetPort: 7777}]\n"
	if _, err := c.Apply(ctx, late); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitService(ctx, "sim/late", len(c.Pods()), 30*time.Second); err != nil {
		t.Errorf("after the outage: %v", err)
	}
}
