package kube

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/weftnet/weft/registry"
)

// DefaultRequestTimeout bounds one API call whose context has no deadline.
const DefaultRequestTimeout = 5 * time.Second

// DefaultPodCIDRWait is how long Acquire waits for the node's Node object
// to exist and carry a spec.podCIDR when its context has no deadline.
const DefaultPodCIDRWait = 2 * time.Minute

// FieldManager names weft in the managedFields of what it writes (its
// node annotations, the NetworkUnavailable condition, applied objects).
const FieldManager = "weft"

// Config configures a client of the Kubernetes API as weft's registry.
type Config struct {
	// Client, if set, is used as is (tests pass a fake clientset).
	// Otherwise Kubeconfig is read, or, if it is "", the in-cluster
	// configuration (the pod's ServiceAccount token and
	// KUBERNETES_SERVICE_HOST).
	Client     kubernetes.Interface
	Kubeconfig string
	// ClusterCIDR, if valid, is weftd's --cluster-cidr: a Node whose
	// podCIDR lies outside it is not a peer, and Acquire refuses it for
	// this node (the cluster's --cluster-cidr and weftd's must agree).
	ClusterCIDR netip.Prefix
	// PodCIDRWait bounds Acquire's wait for spec.podCIDR when its context
	// has no deadline. 0 = DefaultPodCIDRWait.
	PodCIDRWait time.Duration
	// RequestTimeout bounds calls whose context has no deadline.
	// 0 = DefaultRequestTimeout.
	RequestTimeout time.Duration
	// Namespace, if set, limits the object store to one namespace (its
	// Services, EndpointSlices, NetworkPolicies and Pods, and the
	// Namespace object itself): for tests sharing one API server. "" =
	// the whole cluster, as weftd runs.
	Namespace string

	// Options.Logger is used; Subnets and ReclaimAfter are not: the
	// cluster (kube-controller-manager) allocates node subnets.
	registry.Options
}

// Registry is a client of the Kubernetes API as weft's registry. It
// implements registry.Registry and registry.ObjectProvider.
type Registry struct {
	cli            kubernetes.Interface
	server         string // for messages
	cluster        netip.Prefix
	podCIDRWait    time.Duration
	requestTimeout time.Duration
	namespace      string
	log            *slog.Logger
	// holder identifies this client in the holder annotation, so that a
	// client whose node was acquired by another (a restarted weftd, a
	// duplicate node name) learns it at its next Renew.
	holder string

	mu   sync.Mutex
	held map[string]registry.Lease

	nodesOnce sync.Once
	nodes     *nodeSource
	objsOnce  sync.Once
	objs      *objectSource

	ctx       context.Context // cancelled by Close: stops informers and watches
	cancel    context.CancelFunc
	watchers  sync.WaitGroup
	closeOnce sync.Once
}

var (
	_ registry.Registry       = (*Registry)(nil)
	_ registry.ObjectProvider = (*Registry)(nil)
)

// Open makes a client. It does not wait for the API server: an unreachable
// one shows up as failing calls (a degraded Keeper), not as a failure to
// start.
func Open(cfg Config) (*Registry, error) {
	r := &Registry{
		cli:            cfg.Client,
		cluster:        cfg.ClusterCIDR,
		podCIDRWait:    cfg.PodCIDRWait,
		requestTimeout: cfg.RequestTimeout,
		namespace:      cfg.Namespace,
		held:           make(map[string]registry.Lease),
	}
	if r.podCIDRWait <= 0 {
		r.podCIDRWait = DefaultPodCIDRWait
	}
	if r.requestTimeout <= 0 {
		r.requestTimeout = DefaultRequestTimeout
	}
	if r.cluster.IsValid() {
		r.cluster = r.cluster.Masked()
	}
	r.server = "(client given)"
	if r.cli == nil {
		rc, err := RESTConfig(cfg.Kubeconfig)
		if err != nil {
			return nil, err
		}
		cli, err := kubernetes.NewForConfig(rc)
		if err != nil {
			return nil, fmt.Errorf("kube registry: client for %s: %w", rc.Host, err)
		}
		r.cli, r.server = cli, rc.Host
	}
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, fmt.Errorf("kube registry: holder id: %w", err)
	}
	r.holder = hex.EncodeToString(id[:])
	r.log = cfg.LoggerOrDefault().With("registry", "kube", "server", r.server)
	r.ctx, r.cancel = context.WithCancel(context.Background())
	return r, nil
}

// RESTConfig reads kubeconfig, or the in-cluster configuration if it is
// "". The client is weft's: its own user agent, and a rate limit above
// client-go's default (5 QPS) so that `weft apply` of a few hundred objects
// does not crawl; reads come from informers, not from this budget.
func RESTConfig(kubeconfig string) (*rest.Config, error) {
	var rc *rest.Config
	var err error
	if kubeconfig == "" {
		rc, err = rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("kube registry: no --kubeconfig, and not in a cluster: %w", err)
		}
	} else {
		rc, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("kube registry: kubeconfig %s: %w", kubeconfig, err)
		}
	}
	rc.UserAgent = "weftd"
	rc.QPS, rc.Burst = 20, 50
	return rc, nil
}

// call derives the context for one API request: the caller's, bounded by
// RequestTimeout if it has no deadline, and cut short by Close.
func (r *Registry) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return r.callWithin(ctx, r.requestTimeout)
}

func (r *Registry) callWithin(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	var cancel context.CancelFunc
	if _, ok := ctx.Deadline(); !ok {
		ctx, cancel = context.WithTimeout(ctx, d)
	} else {
		ctx, cancel = context.WithCancel(ctx)
	}
	stop := context.AfterFunc(r.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

func (r *Registry) checkOpen() error {
	if r.ctx.Err() != nil {
		return registry.ErrClosed
	}
	return nil
}

// fail wraps err with what was being done, and marks errors that mean
// "the API server did not answer" with ErrUnavailable.
func (r *Registry) fail(op string, err error) error {
	if r.ctx.Err() != nil {
		return fmt.Errorf("%s: %w", op, registry.ErrClosed)
	}
	if isUnavailable(err) {
		return fmt.Errorf("%s: API server %s did not answer: %w: %w", op, r.server, registry.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

func isUnavailable(err error) bool {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne):
		return true
	case apierrors.IsServerTimeout(err), apierrors.IsTimeout(err), apierrors.IsServiceUnavailable(err),
		apierrors.IsTooManyRequests(err), apierrors.IsInternalError(err), apierrors.IsUnexpectedServerError(err):
		return true
	}
	return false
}

// Close implements registry.Registry: it stops the informers and ends
// every watch. It writes nothing: the node's annotations stay, so peers
// keep routing to it (see the package doc on liveness).
func (r *Registry) Close() error {
	r.closeOnce.Do(func() {
		r.cancel()
		r.watchers.Wait()
	})
	return nil
}
