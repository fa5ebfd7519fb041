package kubetest

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/weftnet/weft/internal/testenv"
	"github.com/weftnet/weft/netdev"
)

func TestMain(m *testing.M) {
	os.Exit(Main(m, Options{Prefix: "wk", ControllerManager: true}))
}

// TestSharedControlPlane: the API server answers as v1.37.2 with the
// `kubernetes` Service on the Service CIDR's first address, and the
// controller manager does what tests rely on it for: a Node gets a pod
// CIDR out of the cluster CIDR, and a new namespace its `default`
// ServiceAccount.
func TestSharedControlPlane(t *testing.T) {
	cp := Shared(t)
	cs := cp.Clientset(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	v, err := cs.Discovery().ServerVersion()
	if err != nil {
		t.Fatalf("server version: %v", err)
	}
	if v.GitVersion != "v1.37.2" {
		t.Errorf("server version %q, want v1.37.2 (tools/kube/ldflags stamps it)", v.GitVersion)
	}
	svc, err := cs.CoreV1().Services(corev1.NamespaceDefault).Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("kubernetes Service: %v", err)
	}
	if svc.Spec.ClusterIP != "10.96.0.1" {
		t.Errorf("kubernetes Service ClusterIP %s, want 10.96.0.1", svc.Spec.ClusterIP)
	}

	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "wk-node-" + randomHex(3)}}
	if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create node: %v", err)
	}
	t.Cleanup(func() { cs.CoreV1().Nodes().Delete(context.Background(), node.Name, metav1.DeleteOptions{}) })
	cidr := poll(ctx, t, "node "+node.Name+" spec.podCIDR", func() (string, error) {
		n, err := cs.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		return n.Spec.PodCIDR, nil
	})
	p, err := netip.ParsePrefix(cidr)
	if err != nil || p.Bits() != 24 || !netip.MustParsePrefix("10.244.0.0/16").Contains(p.Addr()) {
		t.Errorf("node podCIDR %q: want a /24 out of 10.244.0.0/16", cidr)
	}

	ns := makeNamespace(ctx, t, cs)
	poll(ctx, t, "serviceaccount "+ns+"/default", func() (string, error) {
		sa, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		return sa.Name, nil
	})
}

// TestServiceAccountConfig: a ServiceAccount's configuration authenticates
// as that account, and RBAC (not the admin's rights) decides what it may
// do: without a binding it may not list pods.
func TestServiceAccountConfig(t *testing.T) {
	cp := Shared(t)
	cs := cp.Clientset(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ns := makeNamespace(ctx, t, cs)
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "probe"}}
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg, path, err := cp.ServiceAccountConfig(ctx, ns, "probe")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("kubeconfig: %v", err)
	}
	sacs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	review, err := sacs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("self subject review: %v", err)
	}
	if want := "system:serviceaccount:" + ns + ":probe"; review.Status.UserInfo.Username != want {
		t.Errorf("authenticated as %q, want %q", review.Status.UserInfo.Username, want)
	}
	_, err = sacs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if !apierrors.IsForbidden(err) {
		t.Errorf("list pods as an unbound serviceaccount: %v, want forbidden", err)
	}
	// The admin may: the same request with the admin's rights succeeds.
	ssar, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
		Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: "delete", Resource: "nodes"}},
	}, metav1.CreateOptions{})
	if err != nil || !ssar.Status.Allowed {
		t.Errorf("admin may delete nodes: %v %+v, want allowed", err, ssar)
	}
}

// TestAttach: a process in a namespace joined with Attach reaches the API
// server at URL, and the serving certificate is valid for APIAddr.
func TestAttach(t *testing.T) {
	cp := Shared(t)
	name := testenv.UniqueName("wk")
	nsPath, err := netdev.NewNetns(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netdev.DeleteNetns(name) })
	if err := cp.Attach(nsPath); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(cp.Config.TLSClientConfig.CAData)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var conn net.Conn
			err := netdev.Do(nsPath, func() (err error) {
				conn, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		},
	}}
	req, err := http.NewRequest(http.MethodGet, cp.URL+"/readyz", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+cp.Config.BearerToken)
	var body []byte
	resp, err := hc.Do(req)
	if err == nil {
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err != nil || strings.TrimSpace(string(body)) != "ok" {
		t.Errorf("GET /readyz from the attached namespace: %q %v, want ok", body, err)
	}
}

// TestMissingBinaries: a control plane without its binaries is a clear
// error naming each missing one and how to build them, before anything is
// made.
func TestMissingBinaries(t *testing.T) {
	_, err := New(Options{ControllerManager: true}, Binaries{Etcd: "/nonexistent/etcd", APIServer: "relative/kube-apiserver", ControllerManager: "/"})
	if err == nil {
		t.Fatal("New with missing binaries succeeded")
	}
	for _, want := range []string{"/nonexistent/etcd", "relative/kube-apiserver", "not an executable", "make tools"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

// TestFailedStartCleansUp: an API server that exits at once is reported
// with its name and its log, and no namespace or directory made for it is
// left.
func TestFailedStartCleansUp(t *testing.T) {
	testenv.RequireRoot(t)
	bins := requireBinaries(t, false)
	bins.APIServer = "/bin/false"
	before := leftovers(t)
	cp, err := New(Options{Prefix: "wkf", StartTimeout: 30 * time.Second}, bins)
	if err == nil {
		cp.Stop()
		t.Fatal("New with /bin/false as the API server succeeded")
	}
	t.Logf("error: %v", err)
	if !strings.Contains(err.Error(), "kube-apiserver exited during start") || !strings.Contains(err.Error(), "kube-apiserver.log") {
		t.Errorf("error %q does not say the API server exited, with its log", err)
	}
	for _, p := range leftovers(t) {
		if !slices.Contains(before, p) {
			t.Errorf("%s left behind", p)
		}
	}
}

// leftovers lists the namespaces and directories a control plane with
// prefix wkf would make.
func leftovers(t *testing.T) []string {
	ns, err := filepath.Glob(filepath.Join(netdev.NetnsDir, "wkf*"))
	if err != nil {
		t.Fatal(err)
	}
	dirs, err := filepath.Glob(filepath.Join(os.TempDir(), "wkf*-kube-*"))
	if err != nil {
		t.Fatal(err)
	}
	return append(ns, dirs...)
}

// makeNamespace creates a namespace with a unique name and deletes it
// when t ends.
func makeNamespace(ctx context.Context, t *testing.T, cs kubernetes.Interface) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "wk-ns-" + randomHex(3)}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() { cs.CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{}) })
	return ns.Name
}

// poll calls f every 100 ms until it returns a non-empty string, failing t
// when ctx ends first.
func poll(ctx context.Context, t *testing.T, what string, f func() (string, error)) string {
	t.Helper()
	var last error
	for {
		s, err := f()
		if err == nil && s != "" {
			return s
		}
		last = err
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not there in time (last error: %v)", what, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
