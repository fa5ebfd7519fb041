package node

import (
	"context"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/objects"
	"github.com/weftnet/weft/registry"
	"github.com/weftnet/weft/service"
)

// mapStore is an ObjectStore over a map: what Apply stores, as given.
type mapStore struct {
	mu   sync.Mutex
	objs map[string]objects.Object
}

func (m *mapStore) Put(_ context.Context, o objects.Object) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.objs[o.Key()] = o
	return true, nil
}

func (m *mapStore) Get(_ context.Context, key string) (objects.Object, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	o, ok := m.objs[key]
	return o, ok, nil
}

func (m *mapStore) Delete(_ context.Context, key string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.objs[key]
	delete(m.objs, key)
	return ok, nil
}

func (m *mapStore) List(context.Context) ([]objects.Object, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]objects.Object, 0, len(m.objs))
	for _, o := range m.objs {
		out = append(out, o)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out, nil
}

func (m *mapStore) Watch(context.Context) (<-chan registry.ObjectEvent, error) {
	return nil, api.ErrNotImplemented
}

// TestApplyAllocatesOnlyWithoutKube: with weft's own store, Apply gives a
// Service without a cluster IP one from the service CIDR and a NodePort
// Service its node port; with the Kubernetes API as the store it stores
// the Service as written, leaving both to the API server, and passes a
// cluster IP outside weftd's service CIDR on for the API server to judge.
func TestApplyAllocatesOnlyWithoutKube(t *testing.T) {
	const svc = `apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80}]
`
	const outside = `apiVersion: v1
kind: Service
metadata: {name: far, namespace: default}
spec:
  clusterIP: 192.0.2.7
  ports: [{port: 80}]
`
	cidrs := service.CIDRs{Service: netip.MustParsePrefix("10.96.0.0/24")}
	tests := []struct {
		name      string
		kube      bool
		docs      string
		wantIP    bool // web got a cluster IP and a node port from weftd
		wantError string
	}{
		{"weft store allocates", false, svc, true, ""},
		{"kube store leaves it to the API server", true, svc, false, ""},
		{"weft store refuses an IP outside its CIDR", false, outside, false, "192.0.2.7"},
		{"kube store passes it on", true, outside, false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			store := &mapStore{objs: map[string]objects.Object{}}
			n := &Node{cfg: Config{KubePods: tc.kube, RegistryBackend: "test"}, svc: &serviceState{store: store, cidrs: cidrs}}
			_, err := n.Apply(context.Background(), api.ApplyRequest{Documents: tc.docs})
			if tc.wantError != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantError) {
					t.Fatalf("Apply: %v, want an error naming %q", err, tc.wantError)
				}
				return
			}
			if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			all, _ := store.List(context.Background())
			if len(all) != 1 || all[0].Service == nil {
				t.Fatalf("stored %v, want one Service", all)
			}
			spec := all[0].Service.Spec
			gotAlloc := spec.ClusterIP != "" && len(spec.Ports) > 0 && spec.Ports[0].NodePort != 0
			if all[0].Service.Name == "web" && gotAlloc != tc.wantIP {
				t.Errorf("stored clusterIP %q nodePort %d: allocated by weftd = %v, want %v",
					spec.ClusterIP, spec.Ports[0].NodePort, gotAlloc, tc.wantIP)
			}
			if all[0].Service.Name == "far" && spec.ClusterIP != "192.0.2.7" {
				t.Errorf("stored clusterIP %q, want 192.0.2.7 as written", spec.ClusterIP)
			}
		})
	}
}
