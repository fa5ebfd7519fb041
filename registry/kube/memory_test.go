package kube

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/weftnet/weft/registry"
)

// fullPod is a Pod as the API server sends a typical one of a Deployment:
// managedFields of the controller and the kubelet, two containers with
// environment, resources, probes and mounts, the service account volume,
// and a status with conditions and container statuses.
func fullPod(i int) *corev1.Pod {
	ns, name := fmt.Sprintf("ns-%d", i%50), fmt.Sprintf("web-7d9c8b6f5-%05d", i)
	now := metav1.NewTime(time.Date(2026, 12, 3, 19, 0, 0, 0, time.UTC))
	fields := func(n int) *metav1.FieldsV1 {
		envs := map[string]any{".": map[string]any{}}
		for j := range n {
			envs[fmt.Sprintf(`k:{"name":"SETTING_%d"}`, j)] = map[string]any{".": map[string]any{}, "f:name": map[string]any{}, "f:value": map[string]any{}}
		}
		raw, _ := json.Marshal(map[string]any{
			"f:metadata": map[string]any{"f:labels": map[string]any{".": map[string]any{}, "f:app": map[string]any{}, "f:pod-template-hash": map[string]any{}}},
			"f:spec": map[string]any{"f:containers": map[string]any{`k:{"name":"web"}`: map[string]any{
				".": map[string]any{}, "f:env": envs, "f:image": map[string]any{}, "f:name": map[string]any{}}}},
		})
		return &metav1.FieldsV1{Raw: raw}
	}
	env := make([]corev1.EnvVar, 6)
	for j := range env {
		env[j] = corev1.EnvVar{Name: fmt.Sprintf("SETTING_%d", j), Value: fmt.Sprintf("value-%d-%d", i, j)}
	}
	res := corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
	}
	probe := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}},
		PeriodSeconds: 10, TimeoutSeconds: 1, SuccessThreshold: 1, FailureThreshold: 3}
	mounts := []corev1.VolumeMount{{Name: "kube-api-access-x7k2p", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true}}
	container := func(cname string, port int32) corev1.Container {
		return corev1.Container{Name: cname, Image: "registry.example/team/" + cname + ":v1.42.7",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: port, Protocol: corev1.ProtocolTCP}, {ContainerPort: 9090, Protocol: corev1.ProtocolTCP}},
			Env:   env, Resources: res, LivenessProbe: probe, ReadinessProbe: probe, VolumeMounts: mounts,
			TerminationMessagePath: "/dev/termination-log", TerminationMessagePolicy: corev1.TerminationMessageReadFile,
			ImagePullPolicy: corev1.PullIfNotPresent}
	}
	status := func(cname string) corev1.ContainerStatus {
		return corev1.ContainerStatus{Name: cname, Ready: true, Image: "registry.example/team/" + cname + ":v1.42.7",
			ImageID:     "registry.example/team/" + cname + "@sha256:" + strings.Repeat("0123456789abcdef", 4),
			ContainerID: "containerd://" + strings.Repeat("fedcba9876543210", 4),
			State:       corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}}
	}
	var conds []corev1.PodCondition
	for _, c := range []corev1.PodConditionType{"PodReadyToStartContainers", corev1.PodInitialized, corev1.PodReady, corev1.ContainersReady, corev1.PodScheduled} {
		conds = append(conds, corev1.PodCondition{Type: c, Status: corev1.ConditionTrue, LastTransitionTime: now})
	}
	ip := fmt.Sprintf("10.244.%d.%d", i/250, 2+i%250)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: ns, UID: types.UID(fmt.Sprintf("6f1c2d3e-4b5a-6978-8a9b-%012d", i)), ResourceVersion: strconv.Itoa(1000 + i),
			GenerateName: "web-7d9c8b6f5-", CreationTimestamp: now,
			Labels:          map[string]string{"app": "web", "pod-template-hash": "7d9c8b6f5", "tier": "frontend"},
			Annotations:     map[string]string{"kubectl.kubernetes.io/restartedAt": "2026-12-01T10:00:00Z", "prometheus.io/scrape": "true"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-7d9c8b6f5", UID: "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"}},
			ManagedFields: []metav1.ManagedFieldsEntry{
				{Manager: "kube-controller-manager", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "v1", Time: &now, FieldsType: "FieldsV1", FieldsV1: fields(6)},
				{Manager: "kubelet", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "v1", Time: &now, FieldsType: "FieldsV1", FieldsV1: fields(4), Subresource: "status"},
			},
		},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{container("web", 8080), container("sidecar", 8081)},
			Volumes: []corev1.Volume{{Name: "kube-api-access-x7k2p", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
				Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: ptr(int64(3607))}}}}}}},
			NodeName: fmt.Sprintf("node-%03d", i%500), ServiceAccountName: "default", RestartPolicy: corev1.RestartPolicyAlways,
			DNSPolicy: corev1.DNSClusterFirst, SchedulerName: "default-scheduler", TerminationGracePeriodSeconds: ptr(int64(30)),
			Tolerations: []corev1.Toleration{{Key: "node.kubernetes.io/not-ready", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr(int64(300))},
				{Key: "node.kubernetes.io/unreachable", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr(int64(300))}},
		},
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning, Conditions: conds, HostIP: "192.168.1.10", HostIPs: []corev1.HostIP{{IP: "192.168.1.10"}},
			PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}, StartTime: &now, QOSClass: corev1.PodQOSBurstable,
			ContainerStatuses: []corev1.ContainerStatus{status("web"), status("sidecar")},
		},
	}
}

// heapAfterGC is the live heap once garbage is collected.
func heapAfterGC() uint64 {
	var m runtime.MemStats
	for range 3 {
		runtime.GC()
	}
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func rssKiB() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return -1
}

// TestTrimmedPodMemory measures what the object store keeps per pod: the
// heap 10,000 pods hold as the API server sends them and as the transform
// leaves them, and end to end, the heap and RSS that an object store
// synced over a fake API server with 10,000 pods adds. The figures are
// logged (go test -v -run TestTrimmedPodMemory ./registry/kube/); the test
// fails if trimming keeps more than a third of a full pod (what remains is
// mostly the size of the corev1.Pod and Container structs themselves), or the store
// more than 3 KiB a pod.
func TestTrimmedPodMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("builds 10,000 pods")
	}
	const pods = 10000
	js, err := json.Marshal(fullPod(7))
	if err != nil {
		t.Fatal(err)
	}
	tjs, _ := json.Marshal(trimPod(fullPod(7)))
	t.Logf("one pod: %d bytes of JSON as sent, %d trimmed; sizeof(corev1.Pod) = %d, sizeof(corev1.Container) = %d bytes",
		len(js), len(tjs), unsafe.Sizeof(corev1.Pod{}), unsafe.Sizeof(corev1.Container{}))

	base := heapAfterGC()
	full := make([]*corev1.Pod, pods)
	for i := range full {
		full[i] = fullPod(i)
	}
	fullHeap := heapAfterGC() - base
	trimmed := make([]*corev1.Pod, pods)
	for i, p := range full {
		trimmed[i] = trimPod(p)
	}
	full = nil
	trimmedHeap := heapAfterGC() - base
	runtime.KeepAlive(trimmed)
	t.Logf("10,000 pods: %.1f MiB as sent (%d B/pod), %.1f MiB trimmed (%d B/pod)",
		float64(fullHeap)/(1<<20), fullHeap/pods, float64(trimmedHeap)/(1<<20), trimmedHeap/pods)
	if trimmedHeap*3 > fullHeap {
		t.Errorf("trimmed pods hold %d B, more than a third of the %d B of full ones", trimmedHeap, fullHeap)
	}
	trimmed = nil

	// End to end: the informers, the hub's view and a watcher's view.
	objs := make([]k8sruntime.Object, pods)
	for i := range objs {
		objs[i] = fullPod(i)
	}
	cs := fake.NewClientset(objs...)
	objs = nil
	before, rssBefore := heapAfterGC(), rssKiB()
	r, err := Open(Config{Client: cs, Options: registry.Options{Logger: quiet()}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ch, err := r.Objects().Watch(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	var snap registry.ObjectEvent
	select {
	case snap = <-ch:
	case <-time.After(60 * time.Second):
		t.Fatal("no snapshot in 60s")
	}
	if snap.Type != registry.ObjectSnapshot || len(snap.Objects) != pods {
		t.Fatalf("snapshot %v of %d objects, want %d pods", snap.Type, len(snap.Objects), pods)
	}
	view := registry.ObjectView{}
	view.Apply(snap)
	snap = registry.ObjectEvent{}
	time.Sleep(200 * time.Millisecond) // the fake's watch re-delivers every pod once more
	after, rssAfter := heapAfterGC(), rssKiB()
	store := after - before
	t.Logf("object store synced over 10,000 pods (informer cache, hub view, one watcher's view): +%.1f MiB heap (%d B/pod), +%.1f MiB RSS; shared machine",
		float64(store)/(1<<20), store/pods, float64(rssAfter-rssBefore)/1024)
	if store/pods > 3<<10 {
		t.Errorf("the store holds %d B a pod, over the 3 KiB budget (150,000 pods: %.0f MiB)", store/pods, float64(store/pods*150000)/(1<<20))
	}
	runtime.KeepAlive(view)
	runtime.KeepAlive(cs)
}
