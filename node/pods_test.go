package node

import (
	"net/netip"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/objects"
)

func TestPodObject(t *testing.T) {
	r := PortRecord{
		PodNamespace: "prod", PodName: "web-0", Addr: netip.MustParsePrefix("10.244.1.5/24"),
		PodMeta: api.PodMeta{PodUID: "u1", Labels: map[string]string{"app": "web"},
			ContainerPorts: []api.ContainerPort{{Name: "http", Port: 8080, Protocol: "TCP"}}},
	}
	o := podObject("n1", r)
	p := o.Pod
	if o.Key() != "Pod/prod/web-0" || p.Spec.NodeName != "n1" || p.Status.PodIP != "10.244.1.5" || p.UID != "u1" ||
		p.Labels["app"] != "web" || p.Status.Phase != corev1.PodRunning {
		t.Errorf("pod = %+v", p)
	}
	if len(p.Spec.Containers) != 1 || p.Spec.Containers[0].Ports[0].Name != "http" || p.Spec.Containers[0].Ports[0].ContainerPort != 8080 {
		t.Errorf("containers = %+v", p.Spec.Containers)
	}
	// It survives the store's round trip.
	b, err := objects.Encode(o)
	if err != nil {
		t.Fatal(err)
	}
	back, err := objects.DecodeOne(b)
	if err != nil || back.Pod.Status.PodIP != "10.244.1.5" {
		t.Errorf("round trip: %v, %+v", err, back.Pod)
	}
}

// TestPodMetaMerge: labels given at attach win; a pod attached without
// labels (weft-cni) keeps those a `weft apply` of its Pod gave; an apply
// of a published Pod keeps where the pod runs.
func TestPodMetaMerge(t *testing.T) {
	applied := objects.Object{Kind: objects.KindPod, Pod: &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "web-0", Labels: map[string]string{"app": "applied"},
			Annotations: map[string]string{"note": "x"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80}}}}},
	}}
	bare := podObject("n1", PortRecord{PodNamespace: "prod", PodName: "web-0", Addr: netip.MustParsePrefix("10.244.1.5/24")})
	m := mergePublished(applied, bare)
	if m.Pod.Labels["app"] != "applied" || len(m.Pod.Spec.Containers) != 1 || m.Pod.Annotations["note"] != "x" ||
		m.Pod.Spec.NodeName != "n1" || m.Pod.Status.PodIP != "10.244.1.5" {
		t.Errorf("merged bare attach = %+v", m.Pod)
	}
	labelled := podObject("n1", PortRecord{PodNamespace: "prod", PodName: "web-0", Addr: netip.MustParsePrefix("10.244.1.5/24"),
		PodMeta: api.PodMeta{Labels: map[string]string{"app": "attach"}}})
	if m := mergePublished(applied, labelled); m.Pod.Labels["app"] != "attach" {
		t.Errorf("attach labels lost: %v", m.Pod.Labels)
	}
	a := applyPodMeta(bare, applied)
	if a.Pod.Spec.NodeName != "n1" || a.Pod.Status.PodIP != "10.244.1.5" || !reflect.DeepEqual(a.Pod.Labels, applied.Pod.Labels) {
		t.Errorf("apply over a published pod = %+v", a.Pod)
	}
	if !samePod(m, m) || samePod(m, bare) {
		t.Error("samePod")
	}
}
