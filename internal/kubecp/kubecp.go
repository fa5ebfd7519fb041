package kubecp

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
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/weftnet/weft/netdev"
)

// Options says what control plane to start. The zero value is etcd and an
// API server only, with the defaults below.
type Options struct {
	// Netns names the network namespace to create (under /run/netns); it
	// must not exist yet. Required.
	Netns string
	// Dir holds the certificates, kubeconfigs, etcd's data and the logs.
	// It is created if missing and removed by Stop. Required: a path
	// naming it is in every component's command line, which is how a
	// caller finds components it did not record (Owns).
	Dir string
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
	// Detach leaves the components running when the starting process
	// exits (a command such as `weft sim up` that hands the control plane
	// to a later one, which stops it by PID). By default each component
	// gets a parent-death signal and dies with its starter.
	Detach bool
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
	apiPort      = 6443
	etcdPort     = 2379
	etcdPeerPort = 2380
)

// ControlPlane is a running control plane. Its exported fields are what a
// later process needs to reach it and to stop it (it encodes as JSON: the
// sim keeps it in its state file); Config is rebuilt with RESTConfig.
type ControlPlane struct {
	// Netns is the name of its network namespace (under /run/netns).
	Netns string `json:"netns"`
	// Dir holds its certificates, kubeconfigs, etcd's data and the logs
	// (NAME.log for each component).
	Dir string `json:"dir"`
	// URL is the API server's address, https://APIAddr:6443.
	URL string `json:"url"`
	// Kubeconfig is the admin's kubeconfig file (system:masters), for
	// processes inside Netns or a namespace joined with Attach.
	Kubeconfig string `json:"kubeconfig"`
	// CAFile is the CA the API server's certificate chains to.
	CAFile string `json:"ca_file"`
	// Components are the processes, in start order.
	Components []*Component `json:"components"`
	// Attached counts the namespaces joined with Attach (each takes a /30).
	Attached int `json:"attached"`
	// Config is the admin's client configuration, dialing from inside
	// Netns; set by Start (RESTConfig makes one for a decoded
	// ControlPlane). Copy it (rest.CopyConfig) before changing it.
	Config *rest.Config `json:"-"`

	opts Options
	pki  *pki
}

// NetnsPath is the path of the control plane's namespace.
func (cp *ControlPlane) NetnsPath() string { return netdev.NetnsPath(cp.Netns) }

// Start makes the namespace opts.Netns and the directory opts.Dir, starts
// the components from the binaries bins and waits until they serve (the
// API server's /readyz; with the controller manager, the `default`
// ServiceAccount too). On failure everything it made is removed and the
// error carries the components' log tails. Stop ends it.
func Start(opts Options, bins Binaries) (cp *ControlPlane, err error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if err := bins.Check(opts.ControllerManager); err != nil {
		return nil, err
	}
	if _, err := os.Stat(netdev.NetnsPath(opts.Netns)); err == nil {
		return nil, fmt.Errorf("control plane: namespace %s exists already", opts.Netns)
	}
	cp = &ControlPlane{opts: opts, Netns: opts.Netns, Dir: opts.Dir, URL: "https://" + netip.AddrPortFrom(APIAddr, apiPort).String()}
	if err := os.MkdirAll(cp.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("control plane: %w", err)
	}
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
	cp.Config = cp.restConfig(cp.pki.adminToken, cp.pki.caPEM)
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

// validate reports options Start cannot work with, before anything is made.
func (o Options) validate() error {
	var errs []error
	if o.Netns == "" || strings.ContainsAny(o.Netns, "/ \t") || len(o.Netns) > 64 {
		errs = append(errs, fmt.Errorf("netns %q: want a name of 1-64 bytes without / or spaces", o.Netns))
	}
	if o.Dir == "" || !filepath.IsAbs(o.Dir) {
		errs = append(errs, fmt.Errorf("dir %q: want an absolute path", o.Dir))
	}
	if !o.ClusterCIDR.Addr().Is4() || o.NodeCIDRMaskSize <= o.ClusterCIDR.Bits() || o.NodeCIDRMaskSize > 30 {
		errs = append(errs, fmt.Errorf("cluster CIDR %s with node mask /%d: want IPv4 and a node mask longer than the CIDR's, at most /30",
			o.ClusterCIDR, o.NodeCIDRMaskSize))
	}
	if _, err := firstHost(o.ServiceCIDR); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("control plane options: %w", errors.Join(errs...))
	}
	return nil
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
func (cp *ControlPlane) wait(ctx context.Context, p *Component, ready func() error) error {
	start := time.Now()
	deadline := start.Add(cp.opts.StartTimeout)
	last := errors.New("not polled yet")
	for {
		select {
		case <-p.Done():
			return fmt.Errorf("%s exited during start (%v); last check: %v", p.Name, p.Wait(), last)
		default:
		}
		if last = ready(); last == nil {
			p.Ready = time.Since(start)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s: %v", p.Name, cp.opts.StartTimeout, last)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last check: %v)", p.Name, ctx.Err(), last)
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
// and removes Dir. It works on a ControlPlane decoded from JSON by another
// process too, and is safe to call more than once.
func (cp *ControlPlane) Stop() error {
	var errs []error
	for i := len(cp.Components) - 1; i >= 0; i-- {
		if err := cp.Components[i].stop(cp.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	if cp.Netns != "" {
		if err := netdev.DeleteNetns(cp.Netns); err != nil {
			errs = append(errs, err)
		}
	}
	if cp.Dir != "" && len(errs) == 0 {
		if err := os.RemoveAll(cp.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Clientset is a clientset for the admin (Config, or RESTConfig for a
// decoded ControlPlane).
func (cp *ControlPlane) Clientset() (kubernetes.Interface, error) {
	cfg := cp.Config
	if cfg == nil {
		var err error
		if cfg, err = cp.RESTConfig(); err != nil {
			return nil, err
		}
	}
	return kubernetes.NewForConfig(cfg)
}
