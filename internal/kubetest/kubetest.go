package kubetest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/weftnet/weft/internal/testenv"
	"github.com/weftnet/weft/netdev"
)

// Options says what control plane to start. The zero value is etcd and an
// API server only, with the defaults below.
type Options struct {
	// Prefix starts the namespace's name (testenv.UniqueName): the test's
	// own short prefix, at most 9 bytes. Default "kt".
	Prefix string
	// ControllerManager also starts kube-controller-manager (Controllers).
	ControllerManager bool
	// ServiceCIDR is --service-cluster-ip-range. Default 10.96.0.0/24.
	ServiceCIDR netip.Prefix
	// ClusterCIDR and NodeCIDRMaskSize are the controller manager's pod
	// CIDRs: Node spec.podCIDR comes out of ClusterCIDR, /NodeCIDRMaskSize
	// each. Default 10.244.0.0/16 and 24.
	ClusterCIDR      netip.Prefix
	NodeCIDRMaskSize int
	// Controllers replaces DefaultControllers.
	Controllers []string
	// APIServerArgs and ControllerManagerArgs are appended to the commands'
	// flags (a later flag wins).
	APIServerArgs, ControllerManagerArgs []string
	// StartTimeout bounds each component's start. Default 2 min: a loaded
	// 2-core machine has taken 30 s for what a quiet one does in 4.
	StartTimeout time.Duration
}

// DefaultControllers are the controller manager's controllers a pod
// network's tests need, and no more (each costs watches and CPU): Node pod
// CIDRs, EndpointSlices (and mirroring of hand-written Endpoints), every
// namespace's `default` ServiceAccount and kube-root-ca.crt (without them
// ServiceAccount admission refuses Pods), ServiceAccount token secrets,
// and namespace deletion.
var DefaultControllers = []string{
	"node-ipam-controller",
	"endpointslice-controller",
	"endpointslice-mirroring-controller",
	"serviceaccount-controller",
	"serviceaccount-token-controller",
	"root-ca-certificate-publisher-controller",
	"namespace-controller",
}

// Addresses inside the control plane's namespace. The API server listens
// on every address there (the namespace holds nothing else) and advertises
// APIAddr, which sits on its loopback device; Attach links other
// namespaces to it out of attachNet.
var (
	APIAddr   = netip.MustParseAddr("172.30.0.1")
	attachNet = netip.MustParsePrefix("172.30.128.0/17")
)

const (
	apiPort       = 6443
	etcdPort      = 2379
	etcdPeerPort  = 2380
	defaultPrefix = "kt"
)

// ControlPlane is a running control plane.
type ControlPlane struct {
	// Netns is the name of its network namespace (under /run/netns).
	Netns string
	// Dir holds its certificates, kubeconfigs, etcd's data and the logs
	// (NAME.log for each component).
	Dir string
	// URL is the API server's address, https://APIAddr:6443.
	URL string
	// Config is the admin's: system:masters, so RBAC allows everything. It
	// dials from inside Netns. Copy it (rest.CopyConfig) before changing it.
	Config *rest.Config
	// Kubeconfig is the admin's kubeconfig file, for processes inside
	// Netns or a namespace joined with Attach.
	Kubeconfig string
	// CAFile is the CA the API server's certificate chains to.
	CAFile string

	opts     Options
	pki      *pki
	procs    []*proc // in start order
	attached int
}

// NetnsPath is the path of the control plane's namespace.
func (cp *ControlPlane) NetnsPath() string { return netdev.NetnsPath(cp.Netns) }

// Start starts a control plane for t and stops it when t ends. Without
// root it skips t unless CI is set (testenv.RequireRoot); without the
// binaries it fails t under CI (`make test` builds them) and skips it
// otherwise. A start that fails fails t with the components' log tails.
func Start(t testing.TB, opts Options) *ControlPlane {
	t.Helper()
	testenv.RequireRoot(t)
	bins := requireBinaries(t, opts.ControllerManager)
	cp, err := New(opts, bins)
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	t.Logf("kubetest: control plane in netns %s (%s)", cp.Netns, cp.startTimes())
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kubetest: control plane logs (%s):\n%s", cp.Dir, cp.LogTails(40))
		}
		if err := cp.Stop(); err != nil {
			t.Errorf("kubetest: stop: %v", err)
		}
	})
	return cp
}

// New starts a control plane from the binaries bins and waits until it
// serves (the API server's /readyz; with the controller manager, the
// `default` ServiceAccount too). On failure everything it made is removed
// and the error carries the log tails. Stop ends it. New is for a control
// plane that outlives one test (a command, Main); tests use Start or Shared.
func New(opts Options, bins Binaries) (cp *ControlPlane, err error) {
	opts = opts.withDefaults()
	if err := bins.check(opts.ControllerManager); err != nil {
		return nil, err
	}
	cp = &ControlPlane{opts: opts, URL: "https://" + netip.AddrPortFrom(APIAddr, apiPort).String()}
	cp.Netns = testenv.UniqueName(opts.Prefix)
	if cp.Dir, err = os.MkdirTemp("", cp.Netns+"-kube-"); err != nil {
		return nil, fmt.Errorf("control plane: %w", err)
	}
	// After a crash the next test run kills what names Dir (every
	// component's command line does) and removes it.
	testenv.RecordPath(cp.Dir)
	defer func() {
		if err != nil {
			tails := cp.LogTails(20)
			if serr := cp.Stop(); serr != nil {
				err = errors.Join(err, serr)
			}
			cp, err = nil, fmt.Errorf("control plane: %w\n%s", err, tails)
		}
	}()
	if _, err := netdev.NewNetns(cp.Netns); err != nil {
		return cp, err
	}
	if err := netdev.AddAddr(cp.NetnsPath(), "lo", netip.PrefixFrom(APIAddr, 32)); err != nil {
		return cp, err
	}
	kubeSvc, err := firstHost(opts.ServiceCIDR)
	if err != nil {
		return cp, err
	}
	if cp.pki, err = makePKI(cp.Dir, []netip.Addr{APIAddr, netip.MustParseAddr("127.0.0.1"), kubeSvc}); err != nil {
		return cp, err
	}
	cp.CAFile = cp.pki.caFile
	cp.Config = cp.restConfig(cp.pki.adminToken)
	cp.Kubeconfig = filepath.Join(cp.Dir, "admin.kubeconfig")
	if err := writeKubeconfig(cp.Kubeconfig, cp.URL, cp.pki.caPEM, "admin", cp.pki.adminToken); err != nil {
		return cp, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*opts.StartTimeout)
	defer cancel()
	if err := cp.startEtcd(ctx, bins.Etcd); err != nil {
		return cp, err
	}
	if err := cp.startAPIServer(ctx, bins.APIServer); err != nil {
		return cp, err
	}
	if opts.ControllerManager {
		if err := cp.startControllerManager(ctx, bins.ControllerManager); err != nil {
			return cp, err
		}
	}
	return cp, nil
}

func (o Options) withDefaults() Options {
	if o.Prefix == "" {
		o.Prefix = defaultPrefix
	}
	if !o.ServiceCIDR.IsValid() {
		o.ServiceCIDR = netip.MustParsePrefix("10.96.0.0/24")
	}
	if !o.ClusterCIDR.IsValid() {
		o.ClusterCIDR = netip.MustParsePrefix("10.244.0.0/16")
	}
	if o.NodeCIDRMaskSize == 0 {
		o.NodeCIDRMaskSize = 24
	}
	if o.Controllers == nil {
		o.Controllers = DefaultControllers
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = 2 * time.Minute
	}
	return o
}

// firstHost is the Service CIDR's first address: the `kubernetes`
// Service's ClusterIP, which the serving certificate must name.
func firstHost(p netip.Prefix) (netip.Addr, error) {
	if !p.Addr().Is4() || p.Bits() > 30 {
		return netip.Addr{}, fmt.Errorf("service CIDR %s: want IPv4, /30 or larger", p)
	}
	return p.Masked().Addr().Next(), nil
}

func (cp *ControlPlane) startEtcd(ctx context.Context, bin string) error {
	client := "http://127.0.0.1:" + strconv.Itoa(etcdPort)
	peer := "http://127.0.0.1:" + strconv.Itoa(etcdPeerPort)
	p, err := cp.start("etcd", bin,
		"--name", "kubetest",
		"--data-dir", filepath.Join(cp.Dir, "etcd"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "kubetest="+peer, "--initial-cluster-state", "new",
		// A test cluster's data is thrown away: no fsync spares the
		// machine's disk, and a short election makes the one member
		// leader in well under a second.
		"--unsafe-no-fsync", "--heartbeat-interval", "50", "--election-timeout", "500",
		"--logger", "zap", "--log-level", "warn",
	)
	if err != nil {
		return err
	}
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: cp.DialContext, DisableKeepAlives: true}}
	return cp.wait(ctx, p, func() error {
		body, err := get(hc, client+"/health", "")
		if err == nil && !bytes.Contains(body, []byte(`"true"`)) {
			err = fmt.Errorf("health: %s", bytes.TrimSpace(body))
		}
		return err
	})
}

func (cp *ControlPlane) startAPIServer(ctx context.Context, bin string) error {
	o := cp.opts
	args := []string{
		"--etcd-servers=http://127.0.0.1:" + strconv.Itoa(etcdPort),
		"--bind-address=0.0.0.0",
		"--advertise-address=" + APIAddr.String(),
		"--secure-port=" + strconv.Itoa(apiPort),
		"--tls-cert-file=" + cp.pki.certFile,
		"--tls-private-key-file=" + cp.pki.keyFile,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + cp.pki.saPub,
		"--service-account-signing-key-file=" + cp.pki.saKey,
		"--token-auth-file=" + cp.pki.tokenFile,
		"--authorization-mode=RBAC",
		"--service-cluster-ip-range=" + o.ServiceCIDR.String(),
		"--allow-privileged=true",
		// Without it, exec and logs look node names up in DNS (issue 19's
		// kubelets have none).
		"--kubelet-preferred-address-types=InternalIP,Hostname",
		"--profiling=false",
	}
	p, err := cp.start("kube-apiserver", bin, append(args, o.APIServerArgs...)...)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(cp.pki.caPEM)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext:       cp.DialContext,
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		DisableKeepAlives: true,
	}}
	return cp.wait(ctx, p, func() error {
		_, err := get(hc, cp.URL+"/readyz", cp.pki.adminToken)
		return err
	})
}

func (cp *ControlPlane) startControllerManager(ctx context.Context, bin string) error {
	o := cp.opts
	args := []string{
		"--kubeconfig=" + cp.Kubeconfig,
		"--leader-elect=false",
		"--root-ca-file=" + cp.pki.caFile,
		"--service-account-private-key-file=" + cp.pki.saKey,
		"--service-cluster-ip-range=" + o.ServiceCIDR.String(),
		"--allocate-node-cidrs=true",
		"--cluster-cidr=" + o.ClusterCIDR.String(),
		"--node-cidr-mask-size=" + strconv.Itoa(o.NodeCIDRMaskSize),
		"--controllers=" + strings.Join(o.Controllers, ","),
		"--bind-address=127.0.0.1",
		"--cert-dir=" + filepath.Join(cp.Dir, "kube-controller-manager"),
		"--profiling=false",
	}
	p, err := cp.start("kube-controller-manager", bin, append(args, o.ControllerManagerArgs...)...)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cp.Config)
	if err != nil {
		return err
	}
	// Its work is what tests wait for: the `default` namespace's
	// ServiceAccount is made by the serviceaccount controller once its
	// informers have synced.
	return cp.wait(ctx, p, func() error {
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := cs.CoreV1().ServiceAccounts(corev1.NamespaceDefault).Get(c, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) && !containsController(o.Controllers, "serviceaccount-controller") {
			return nil // no controller that would make it: started is all we can see
		}
		return err
	})
}

func containsController(list []string, c string) bool {
	for _, x := range list {
		if x == c || x == "*" {
			return true
		}
	}
	return false
}

// wait polls ready every 100 ms until it returns nil, the process exits,
// StartTimeout passes or ctx ends.
func (cp *ControlPlane) wait(ctx context.Context, p *proc, ready func() error) error {
	start := time.Now()
	deadline := start.Add(cp.opts.StartTimeout)
	last := errors.New("not polled yet")
	for {
		select {
		case <-p.Done():
			return fmt.Errorf("%s exited during start (%v); last check: %v", p.name, p.Wait(), last)
		default:
		}
		if last = ready(); last == nil {
			p.ready = time.Since(start)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s: %v", p.name, cp.opts.StartTimeout, last)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last check: %v)", p.name, ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// get GETs url (with a bearer token if one is given) and returns the body
// of a 200 response; anything else is an error carrying the body's start.
func get(hc *http.Client, url, token string) ([]byte, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %.300s", url, resp.Status, bytes.TrimSpace(body))
	}
	return body, nil
}

// DialContext dials addr from inside the control plane's namespace: the
// socket is made there, so it reaches the components on any of their
// addresses (127.0.0.1 too) and nothing crosses the root namespace.
func (cp *ControlPlane) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var conn net.Conn
	err := netdev.Do(cp.NetnsPath(), func() error {
		var d net.Dialer
		var err error
		conn, err = d.DialContext(ctx, network, addr)
		return err
	})
	return conn, err
}

// Stop ends the components (by PID, newest first), deletes the namespace
// and removes Dir. It is safe to call more than once.
func (cp *ControlPlane) Stop() error {
	var errs []error
	for i := len(cp.procs) - 1; i >= 0; i-- {
		if err := cp.procs[i].stop(); err != nil {
			errs = append(errs, err)
		}
	}
	cp.procs = nil
	if cp.Netns != "" {
		if err := netdev.DeleteNetns(cp.Netns); err != nil {
			errs = append(errs, err)
		}
	}
	if cp.Dir != "" {
		if err := os.RemoveAll(cp.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Clientset is a clientset for the admin (Config); it fails t if one
// cannot be made.
func (cp *ControlPlane) Clientset(t testing.TB) kubernetes.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cp.Config)
	if err != nil {
		t.Fatalf("kubetest: clientset: %v", err)
	}
	return cs
}
