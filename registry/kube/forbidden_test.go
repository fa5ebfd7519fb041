package kube_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/weftnet/weft/deploy"
	"github.com/weftnet/weft/internal/kubetest"
	"github.com/weftnet/weft/internal/testenv"
	"github.com/weftnet/weft/objects"
	"github.com/weftnet/weft/registry/kube"
)

// deployClusterRole is the ClusterRole of deploy/weft.yaml: weftd's
// least-privilege rights.
func deployClusterRole(t *testing.T) *rbacv1.ClusterRole {
	t.Helper()
	for _, doc := range strings.Split(string(deploy.Manifest), "\n---\n") {
		var probe struct{ Kind string }
		if err := yaml.Unmarshal([]byte(doc), &probe); err != nil || probe.Kind != "ClusterRole" {
			continue
		}
		var cr rbacv1.ClusterRole
		if err := yaml.Unmarshal([]byte(doc), &cr); err != nil {
			t.Fatalf("deploy/weft.yaml ClusterRole: %v", err)
		}
		return &cr
	}
	t.Fatal("deploy/weft.yaml has no ClusterRole")
	return nil
}

// TestAPIServerForbiddenApply: a weftd with deploy/'s rights (a
// ServiceAccount bound to its ClusterRole) may read objects but not write
// them; `weft apply` and `weft delete` through it fail with ErrForbidden
// and a message naming the verb and resource and saying to use kubectl or
// grant the verb, and the API server's own message.
func TestAPIServerForbiddenApply(t *testing.T) {
	cp := kubetest.Shared(t)
	admin := cp.Clientset(t)
	ctx := apiCtx(t)
	name := testenv.UniqueName("wqf")
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	if _, err := admin.CoreV1().ServiceAccounts(name).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "weft"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	role := deployClusterRole(t)
	role.ObjectMeta = metav1.ObjectMeta{Name: name}
	if _, err := admin.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.RbacV1().ClusterRoles().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "weft", Namespace: name}},
	}
	if _, err := admin.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		admin.RbacV1().ClusterRoleBindings().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	cfg, _, err := cp.ServiceAccountConfig(ctx, name, "weft")
	if err != nil {
		t.Fatal(err)
	}
	sa, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r, err := kube.Open(kube.Config{Client: sa})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	store := r.Objects()

	// Reading is what weftd does, and allowed.
	if _, err := store.List(ctx); err != nil {
		t.Errorf("list objects with deploy/'s rights: %v", err)
	}
	svc := objects.Object{Kind: objects.KindService, Service: &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: "web"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
	}}
	tests := []struct {
		name string
		call func() error
		want []string
	}{
		{"apply", func() error { _, err := store.Put(ctx, svc); return err },
			[]string{"may not patch (and create, for a new object) services in namespace \"" + name + "\"", "kubectl apply -f", `grant weftd's ServiceAccount "patch, create" on services`, `cannot patch resource "services"`}},
		{"delete", func() error { _, err := store.Delete(ctx, svc.Key()); return err },
			[]string{"may not delete services in namespace \"" + name + "\"", "kubectl delete -f", `"delete" on services`, `cannot delete resource "services"`}},
		{"get", func() error { _, _, err := store.Get(ctx, svc.Key()); return err },
			[]string{"may not get services", `"get" on services`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if !errors.Is(err, kube.ErrForbidden) {
				t.Fatalf("%s as weftd with deploy/'s rights: %v, want ErrForbidden", tc.name, err)
			}
			t.Logf("error: %v", err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q", w)
				}
			}
		})
	}
	// The admin's apply of the same Service goes through: the refusal was RBAC's.
	ar, err := kube.Open(kube.Config{Client: admin})
	if err != nil {
		t.Fatal(err)
	}
	defer ar.Close()
	if _, err := ar.Objects().Put(ctx, svc); err != nil {
		t.Errorf("apply as admin: %v", err)
	}
}
