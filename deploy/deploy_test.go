package deploy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"

	"github.com/weftnet/weft/internal/kubetest"
)

func TestMain(m *testing.M) {
	os.Exit(kubetest.Main(m, kubetest.Options{Prefix: "wkd"}))
}

// weftd's identity, as weft.yaml names it.
const (
	saNamespace = "weft"
	saName      = "weft"
)

// manifestObjects decodes weft.yaml, one object per document. Duplicate
// keys are errors (sigs.k8s.io/yaml's strict conversion); unknown fields
// are the API server's to refuse (fieldValidation=Strict on create).
func manifestObjects(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(Manifest)))
	var objs []*unstructured.Unstructured
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("weft.yaml: %v", err)
		}
		j, err := yaml.YAMLToJSONStrict(doc)
		if err != nil {
			t.Fatalf("weft.yaml document %d: %v", len(objs)+1, err)
		}
		if string(bytes.TrimSpace(j)) == "null" {
			continue // a document of comments only
		}
		o := &unstructured.Unstructured{}
		if err := o.UnmarshalJSON(j); err != nil {
			t.Fatalf("weft.yaml document %d: %v", len(objs)+1, err)
		}
		objs = append(objs, o)
	}
	return objs
}

// TestManifestApplies creates every object of weft.yaml in a real API
// server, which validates each (schema, unknown fields, the DaemonSet's pod
// template, the priority class, pod security admission on the namespace),
// then checks the ServiceAccount's rights (rbacChecks).
func TestManifestApplies(t *testing.T) {
	cp := kubetest.Shared(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	applyManifest(ctx, t, cp)

	cs := cp.Clientset(t)
	ds, err := cs.AppsV1().DaemonSets(saNamespace).Get(ctx, "weft", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the DaemonSet as stored: %v", err)
	}
	if ps := ds.Spec.Template.Spec; ps.ServiceAccountName != saName || !ps.HostNetwork {
		t.Errorf("DaemonSet pods run as %q, hostNetwork %v; want %s with the host network", ps.ServiceAccountName, ps.HostNetwork, saName)
	}

	t.Run("rbac", func(t *testing.T) { rbacChecks(ctx, t, cs) })
	t.Run("as-serviceaccount", func(t *testing.T) { asServiceAccount(ctx, t, cp, cs) })
}

// applyManifest creates the objects in file order (the Namespace first) and
// deletes them, newest first, when t ends.
func applyManifest(ctx context.Context, t *testing.T, cp *kubetest.ControlPlane) {
	t.Helper()
	objs := manifestObjects(t)
	kinds := map[string]int{}
	for _, o := range objs {
		kinds[o.GetKind()]++
	}
	for _, k := range []string{"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet"} {
		if kinds[k] != 1 {
			t.Errorf("weft.yaml has %d %s objects, want 1", kinds[k], k)
		}
	}
	cs := cp.Clientset(t)
	groups, err := restmapper.GetAPIGroupResources(cs.Discovery())
	if err != nil {
		t.Fatalf("discovery: %v", err)
	}
	mapper := restmapper.NewDiscoveryRESTMapper(groups)
	dyn, err := dynamic.NewForConfig(cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		gvk := o.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Fatalf("%s %s: the API server does not serve it: %v", gvk, o.GetName(), err)
		}
		ri := dyn.Resource(m.Resource)
		var res dynamic.ResourceInterface = ri
		if ns := o.GetNamespace(); ns != "" {
			res = ri.Namespace(ns)
		}
		if _, err := res.Create(ctx, o, metav1.CreateOptions{FieldValidation: metav1.FieldValidationStrict}); err != nil {
			t.Fatalf("create %s %s/%s: %v", gvk.Kind, o.GetNamespace(), o.GetName(), err)
		}
		t.Cleanup(func() {
			err := res.Delete(context.Background(), o.GetName(), metav1.DeleteOptions{})
			if err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("delete %s %s: %v", gvk.Kind, o.GetName(), err)
			}
		})
	}
}

// access is one request the ServiceAccount may or may not make.
type access struct {
	verb, group, resource, sub, namespace, name string
}

// weftdUses is every request weftd makes in kube mode (registry/kube): it
// reads its own Node, lists and watches every Node (peers) and what the
// data path follows, cluster-wide, and patches its own Node's status
// (annotations, NetworkUnavailable). Each must be allowed.
var weftdUses = []access{
	{verb: "get", resource: "nodes", name: "node-a"},
	{verb: "list", resource: "nodes"},
	{verb: "watch", resource: "nodes"},
	{verb: "patch", resource: "nodes", sub: "status", name: "node-a"},
	{verb: "list", resource: "pods"},
	{verb: "watch", resource: "pods"},
	{verb: "list", resource: "namespaces"},
	{verb: "watch", resource: "namespaces"},
	{verb: "list", resource: "services"},
	{verb: "watch", resource: "services"},
	{verb: "list", group: "discovery.k8s.io", resource: "endpointslices"},
	{verb: "watch", group: "discovery.k8s.io", resource: "endpointslices"},
	{verb: "list", group: "networking.k8s.io", resource: "networkpolicies"},
	{verb: "watch", group: "networking.k8s.io", resource: "networkpolicies"},
}

// weftdMustNot is a sample of what a compromised weftd must not be able to
// do: read secrets or config, start or change workloads, change Nodes
// beyond their status (labels, taints, spec.podCIDR) or delete them, write
// Services, EndpointSlices or policies, mint tokens, exec into pods, or
// touch RBAC.
var weftdMustNot = []access{
	{verb: "get", resource: "secrets", namespace: "kube-system", name: "any"},
	{verb: "list", resource: "secrets"},
	{verb: "watch", resource: "secrets"},
	{verb: "get", resource: "configmaps", namespace: "kube-system", name: "any"},
	{verb: "list", resource: "configmaps"},
	{verb: "create", resource: "pods", namespace: "default"},
	{verb: "delete", resource: "pods", namespace: "default", name: "any"},
	{verb: "get", resource: "pods", namespace: "default", name: "any"},
	{verb: "create", resource: "pods", sub: "exec", namespace: "default", name: "any"},
	{verb: "create", resource: "nodes"},
	{verb: "update", resource: "nodes", name: "node-a"},
	{verb: "patch", resource: "nodes", name: "node-a"},
	{verb: "delete", resource: "nodes", name: "node-a"},
	{verb: "update", resource: "nodes", sub: "status", name: "node-a"},
	{verb: "create", resource: "services", namespace: "default"},
	{verb: "update", resource: "services", namespace: "default", name: "any"},
	{verb: "get", resource: "services", namespace: "default", name: "any"},
	{verb: "create", group: "discovery.k8s.io", resource: "endpointslices", namespace: "default"},
	{verb: "delete", group: "networking.k8s.io", resource: "networkpolicies", namespace: "default", name: "any"},
	{verb: "delete", resource: "namespaces", name: "default"},
	{verb: "create", resource: "serviceaccounts", sub: "token", namespace: "kube-system", name: "default"},
	{verb: "create", group: "rbac.authorization.k8s.io", resource: "clusterrolebindings"},
	{verb: "bind", group: "rbac.authorization.k8s.io", resource: "clusterroles", name: "cluster-admin"},
	{verb: "escalate", group: "rbac.authorization.k8s.io", resource: "clusterroles", name: "weft"},
	{verb: "impersonate", resource: "users", name: "admin"},
	{verb: "create", group: "apps", resource: "daemonsets", namespace: saNamespace},
	{verb: "create", group: "coordination.k8s.io", resource: "leases", namespace: "kube-node-lease"},
	{verb: "*", group: "*", resource: "*"},
}

// rbacChecks asks the API server (SubjectAccessReview, as the authorizer
// decides a real request) whether weftd's ServiceAccount may make each
// request: every one weftd makes, and none of weftdMustNot.
func rbacChecks(ctx context.Context, t *testing.T, cs kubernetes.Interface) {
	user := "system:serviceaccount:" + saNamespace + ":" + saName
	groups := []string{"system:serviceaccounts", "system:serviceaccounts:" + saNamespace, "system:authenticated"}
	allowed := func(a access) (bool, string) {
		r, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
			Spec: authorizationv1.SubjectAccessReviewSpec{
				User: user, Groups: groups,
				ResourceAttributes: &authorizationv1.ResourceAttributes{
					Verb: a.verb, Group: a.group, Resource: a.resource, Subresource: a.sub,
					Namespace: a.namespace, Name: a.name,
				},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("subject access review %+v: %v", a, err)
		}
		return r.Status.Allowed, r.Status.Reason
	}
	for _, a := range weftdUses {
		if ok, why := allowed(a); !ok {
			t.Errorf("%s may not %s %s: weftd needs it (%s)", user, a.verb, a.describe(), why)
		}
	}
	for _, a := range weftdMustNot {
		if ok, why := allowed(a); ok {
			t.Errorf("%s may %s %s: more than weftd needs (%s)", user, a.verb, a.describe(), why)
		}
	}
	t.Logf("%d requests weftd makes allowed, %d others denied", len(weftdUses), len(weftdMustNot))
}

func (a access) describe() string {
	s := a.resource
	if a.group != "" {
		s += "." + a.group
	}
	if a.sub != "" {
		s += "/" + a.sub
	}
	if a.namespace != "" {
		s += " in " + a.namespace
	}
	if a.name != "" {
		s += " named " + a.name
	}
	return s
}

// asServiceAccount makes real requests with a token of weftd's
// ServiceAccount: what the authorizer allows, the API server does, and a
// patch of the Node's spec (not its status) is refused.
func asServiceAccount(ctx context.Context, t *testing.T, cp *kubetest.ControlPlane, admin kubernetes.Interface) {
	cfg, _, err := cp.ServiceAccountConfig(ctx, saNamespace, saName)
	if err != nil {
		t.Fatal(err)
	}
	sa, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "wkd-node-a"}}
	if _, err := admin.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.CoreV1().Nodes().Delete(context.Background(), node.Name, metav1.DeleteOptions{}) })

	if _, err := sa.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err != nil {
		t.Errorf("list nodes as weftd: %v", err)
	}
	status := []byte(`{"metadata":{"annotations":{"weft.example/probe":"1"}}}`)
	if _, err := sa.CoreV1().Nodes().Patch(ctx, node.Name, types.MergePatchType, status, metav1.PatchOptions{}, "status"); err != nil {
		t.Errorf("patch nodes/status as weftd: %v", err)
	}
	spec := []byte(`{"spec":{"podCIDR":"10.244.9.0/24"}}`)
	if _, err := sa.CoreV1().Nodes().Patch(ctx, node.Name, types.MergePatchType, spec, metav1.PatchOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("patch a Node's spec as weftd: %v, want forbidden", err)
	}
	if _, err := sa.CoreV1().Secrets(saNamespace).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("list secrets as weftd: %v, want forbidden", err)
	}
}
