package sim

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/objects"
)

// `weft sim apply -f` in a kube sim is what `kubectl apply --server-side`
// does: each object is a server-side apply (field manager weft-sim,
// forced), so the API server validates and defaults it and allocates a
// Service's cluster IP and node ports. A Pod document changes only the
// Pod's labels (the sim owns the rest of its Pods, as a kubelet would):
// that is how a policy case relabels a pod.

// kubeApplied is one object as the API server stored it.
type kubeApplied struct {
	result api.ApplyResult
	stored runtime.Object
}

// kubeRequestTimeout bounds one `weft sim apply` or `delete` against the
// API server.
const kubeRequestTimeout = 30 * time.Second

// kubeRequest decodes docs (strictly, as weftd would) and gives the admin
// client that applies or deletes them.
func (c *Cluster) kubeRequest(docs string) ([]objects.Object, kubernetes.Interface, error) {
	objs, err := objects.Decode(strings.NewReader(docs))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", api.ErrBadRequest, err)
	}
	cs, err := c.kubeClient()
	if err != nil {
		return nil, nil, err
	}
	return objs, cs, nil
}

// kubeApply applies the objects of docs to the API server, in order,
// stopping at the first the API server refuses.
func (c *Cluster) kubeApply(ctx context.Context, docs string) ([]kubeApplied, error) {
	objs, cs, err := c.kubeRequest(docs)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, kubeRequestTimeout)
	defer cancel()
	var out []kubeApplied
	for _, o := range objs {
		a, err := kubeApplyOne(ctx, cs, o)
		if err != nil {
			return out, fmt.Errorf("apply %s (after %d applied): %w", o, len(out), err)
		}
		out = append(out, a)
	}
	return out, nil
}

func kubeApplyOne(ctx context.Context, cs kubernetes.Interface, o objects.Object) (kubeApplied, error) {
	m := o.Meta()
	res := api.ApplyResult{Kind: string(o.Kind), Namespace: m.Namespace, Name: m.Name, Action: api.ActionConfigured}
	if o.Pod != nil {
		return kubeRelabel(ctx, cs, o, res)
	}
	y, err := objects.Encode(o)
	if err != nil {
		return kubeApplied{}, err
	}
	body, err := yaml.YAMLToJSON(y)
	if err != nil {
		return kubeApplied{}, err
	}
	// A server-side apply does not say whether it created the object: ask
	// first (the sim is the only writer of its objects).
	existed, err := kubeExists(ctx, cs, o)
	if err != nil {
		return kubeApplied{}, err
	}
	if !existed {
		res.Action = api.ActionCreated
	}
	force := true
	opts := metav1.PatchOptions{FieldManager: kubeFieldManager, Force: &force}
	var got runtime.Object
	switch o.Kind {
	case objects.KindNamespace:
		got, err = cs.CoreV1().Namespaces().Patch(ctx, m.Name, types.ApplyPatchType, body, opts)
	case objects.KindService:
		svc, perr := cs.CoreV1().Services(m.Namespace).Patch(ctx, m.Name, types.ApplyPatchType, body, opts)
		if perr == nil {
			res.ClusterIP = svc.Spec.ClusterIP
		}
		got, err = svc, perr
	case objects.KindEndpointSlice:
		got, err = cs.DiscoveryV1().EndpointSlices(m.Namespace).Patch(ctx, m.Name, types.ApplyPatchType, body, opts)
	case objects.KindNetworkPolicy:
		got, err = cs.NetworkingV1().NetworkPolicies(m.Namespace).Patch(ctx, m.Name, types.ApplyPatchType, body, opts)
	default:
		return kubeApplied{}, fmt.Errorf("kind %q is not one the sim applies", o.Kind)
	}
	if err != nil {
		return kubeApplied{}, err
	}
	return kubeApplied{result: res, stored: got}, nil
}

// kubeExists reports whether the API server holds object o.
func kubeExists(ctx context.Context, cs kubernetes.Interface, o objects.Object) (bool, error) {
	m := o.Meta()
	var err error
	get := metav1.GetOptions{}
	switch o.Kind {
	case objects.KindNamespace:
		_, err = cs.CoreV1().Namespaces().Get(ctx, m.Name, get)
	case objects.KindService:
		_, err = cs.CoreV1().Services(m.Namespace).Get(ctx, m.Name, get)
	case objects.KindEndpointSlice:
		_, err = cs.DiscoveryV1().EndpointSlices(m.Namespace).Get(ctx, m.Name, get)
	case objects.KindNetworkPolicy:
		_, err = cs.NetworkingV1().NetworkPolicies(m.Namespace).Get(ctx, m.Name, get)
	default:
		return false, fmt.Errorf("kind %q is not one the sim applies", o.Kind)
	}
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

// kubeRelabel makes the Pod's labels those of the document.
func kubeRelabel(ctx context.Context, cs kubernetes.Interface, o objects.Object, res api.ApplyResult) (kubeApplied, error) {
	pods := cs.CoreV1().Pods(o.Pod.Namespace)
	pod, err := pods.Get(ctx, o.Pod.Name, metav1.GetOptions{})
	if err != nil {
		return kubeApplied{}, err
	}
	if maps.Equal(pod.Labels, o.Pod.Labels) {
		res.Action = api.ActionUnchanged
		return kubeApplied{result: res, stored: pod}, nil
	}
	pod.Labels = o.Pod.Labels
	got, err := pods.Update(ctx, pod, metav1.UpdateOptions{FieldManager: kubeFieldManager})
	if err != nil {
		return kubeApplied{}, err
	}
	return kubeApplied{result: res, stored: got}, nil
}

// kubeDelete deletes the objects docs names from the API server.
func (c *Cluster) kubeDelete(ctx context.Context, docs string) ([]api.ApplyResult, error) {
	objs, cs, err := c.kubeRequest(docs)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, kubeRequestTimeout)
	defer cancel()
	var out []api.ApplyResult
	for _, o := range objs {
		m := o.Meta()
		var o2 metav1.DeleteOptions
		switch o.Kind {
		case objects.KindPod:
			err = cs.CoreV1().Pods(m.Namespace).Delete(ctx, m.Name, o2)
		case objects.KindNamespace:
			err = cs.CoreV1().Namespaces().Delete(ctx, m.Name, o2)
		case objects.KindService:
			err = cs.CoreV1().Services(m.Namespace).Delete(ctx, m.Name, o2)
		case objects.KindEndpointSlice:
			err = cs.DiscoveryV1().EndpointSlices(m.Namespace).Delete(ctx, m.Name, o2)
		case objects.KindNetworkPolicy:
			err = cs.NetworkingV1().NetworkPolicies(m.Namespace).Delete(ctx, m.Name, o2)
		default:
			err = fmt.Errorf("kind %q is not one the sim deletes", o.Kind)
		}
		r := api.ApplyResult{Kind: string(o.Kind), Namespace: m.Namespace, Name: m.Name, Action: api.ActionDeleted}
		switch {
		case apierrors.IsNotFound(err):
			r.Action = api.ActionNotFound
		case err != nil:
			return out, fmt.Errorf("delete %s: %w", o, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// kubePolicyFingerprintObject is a NetworkPolicy as weftd's kube store
// keeps it (registry/kube trims the metadata to name, namespace, UID,
// resource version, labels and annotations), which is what its policy
// fingerprint is taken over.
func kubePolicyFingerprintObject(np *networkingv1.NetworkPolicy) *networkingv1.NetworkPolicy {
	out := *np
	ann := maps.Clone(np.Annotations)
	delete(ann, "kubectl.kubernetes.io/last-applied-configuration")
	if len(ann) == 0 {
		ann = nil
	}
	out.ObjectMeta = metav1.ObjectMeta{Name: np.Name, Namespace: np.Namespace, UID: np.UID,
		ResourceVersion: np.ResourceVersion, Labels: np.Labels, Annotations: ann, DeletionTimestamp: np.DeletionTimestamp}
	return &out
}
