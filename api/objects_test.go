package api

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// fakeObjects is a Service that also stores objects.
type fakeObjects struct {
	fakeService
	applied []ApplyRequest
}

var wantServices = []ServiceInfo{{
	Namespace: "default", Name: "web", ClusterIP: netip.MustParseAddr("10.96.0.10"),
	Ports: []ServicePort{{Name: "http", Port: 80, Protocol: "TCP", TargetPort: "8080"}},
	Ready: 2, Total: 3, Source: "selector", NewFlows: 7,
}}

func (f *fakeObjects) Apply(_ context.Context, r ApplyRequest) ([]ApplyResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = append(f.applied, r)
	return []ApplyResult{{Kind: "Service", Namespace: "default", Name: "web", Action: ActionCreated, ClusterIP: "10.96.0.10"}}, nil
}

func (f *fakeObjects) DeleteObjects(_ context.Context, r ApplyRequest) ([]ApplyResult, error) {
	return []ApplyResult{{Kind: "Service", Namespace: "default", Name: "web", Action: ActionNotFound}}, nil
}

func (f *fakeObjects) Services(context.Context) ([]ServiceInfo, error) { return wantServices, nil }

func TestObjectEndpoints(t *testing.T) {
	svc := &fakeObjects{}
	c := NewClient(startServer(t, svc))
	defer c.Close()
	ctx := testCtx(t)
	res, err := c.Apply(ctx, ApplyRequest{Documents: "kind: Service", DryRun: true})
	if err != nil || len(res) != 1 || res[0].Action != ActionCreated || res[0].ClusterIP != "10.96.0.10" {
		t.Errorf("Apply = %+v, %v", res, err)
	}
	if len(svc.applied) != 1 || svc.applied[0].Documents != "kind: Service" || !svc.applied[0].DryRun {
		t.Errorf("weftd got %+v", svc.applied)
	}
	res, err = c.DeleteObjects(ctx, ApplyRequest{Documents: "x"})
	if err != nil || res[0].Action != ActionNotFound {
		t.Errorf("DeleteObjects = %+v, %v", res, err)
	}
	got, err := c.Services(ctx)
	if err != nil || !reflect.DeepEqual(got, wantServices) {
		t.Errorf("Services = %+v, %v; want %+v", got, err, wantServices)
	}
	if s := wantServices[0].Ports[0].String(); s != "http:80/TCP->8080" {
		t.Errorf("port string %q", s)
	}
	if _, err := c.Apply(ctx, ApplyRequest{}); !errors.Is(err, ErrBadRequest) {
		t.Errorf("empty apply: %v, want a bad request", err)
	}
	big := ApplyRequest{Documents: strings.Repeat("a", MaxApplyBytes+1)}
	if _, err := c.Apply(ctx, big); !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), "longer than") {
		t.Errorf("oversized apply: %v, want a bad request saying it is too long", err)
	}
}

// TestObjectEndpointsWithoutStore: a Service with no object store answers
// 501, not 404.
func TestObjectEndpointsWithoutStore(t *testing.T) {
	c := NewClient(startServer(t, &fakeService{}))
	defer c.Close()
	ctx := testCtx(t)
	if _, err := c.Apply(ctx, ApplyRequest{Documents: "x"}); !errors.Is(err, ErrNotImplemented) {
		t.Errorf("Apply: %v, want not implemented", err)
	}
	if _, err := c.Services(ctx); !errors.Is(err, ErrNotImplemented) {
		t.Errorf("Services: %v, want not implemented", err)
	}
}

func TestPodMetaChecks(t *testing.T) {
	long := strings.Repeat("x", 64)
	for _, tc := range []struct {
		name string
		meta PodMeta
		err  string
	}{
		{"ok", PodMeta{PodUID: "u", Labels: map[string]string{"app": "web"}, ContainerPorts: []ContainerPort{{Name: "http", Port: 80}}}, ""},
		{"long value", PodMeta{Labels: map[string]string{"app": long}}, "labels"},
		{"empty key", PodMeta{Labels: map[string]string{"": "x"}}, "labels"},
		{"port 0", PodMeta{ContainerPorts: []ContainerPort{{Name: "http"}}}, "number 0"},
		{"no name", PodMeta{ContainerPorts: []ContainerPort{{Port: 80}}}, "port name"},
		{"sctp", PodMeta{ContainerPorts: []ContainerPort{{Name: "s", Port: 80, Protocol: "SCTP"}}}, "protocol"},
	} {
		req := AttachRequest{PodID: "p", Netns: "/x", PodMeta: tc.meta}
		err := req.Normalize()
		if (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: Normalize = %v, want %q", tc.name, err, tc.err)
		}
	}
}
