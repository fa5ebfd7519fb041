package main

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weftnet/weft/api"
)

// fakeObjects adds the object endpoints to the fake weftd.
type fakeObjects struct {
	fakeService
	got []api.ApplyRequest
}

func (f *fakeObjects) Apply(_ context.Context, r api.ApplyRequest) ([]api.ApplyResult, error) {
	f.got = append(f.got, r)
	if strings.Contains(r.Documents, "SCTP") {
		return nil, api.BadRequest("documents", "invalid object: Service default/bad: spec.ports[0]: protocol SCTP: weft serves TCP and UDP only")
	}
	return []api.ApplyResult{
		{Kind: "Service", Namespace: "default", Name: "web", Action: api.ActionCreated, ClusterIP: "10.96.1.0"},
		{Kind: "Pod", Namespace: "prod", Name: "web-0", Action: api.ActionUnchanged},
	}, nil
}

func (f *fakeObjects) DeleteObjects(_ context.Context, r api.ApplyRequest) ([]api.ApplyResult, error) {
	f.got = append(f.got, r)
	return []api.ApplyResult{{Kind: "Service", Namespace: "default", Name: "web", Action: api.ActionNotFound}}, nil
}

func (f *fakeObjects) Services(context.Context) ([]api.ServiceInfo, error) {
	return []api.ServiceInfo{
		{Namespace: "default", Name: "web", ClusterIP: netip.MustParseAddr("10.96.1.0"),
			Ports: []api.ServicePort{{Name: "http", Port: 80, Protocol: "TCP", TargetPort: "8080"}, {Name: "dns", Port: 53, Protocol: "UDP", TargetPort: "53"}},
			Ready: 2, Total: 3, Source: "selector", NewFlows: 12},
		{Namespace: "default", Name: "db", Source: "none", Skipped: "headless"},
	}, nil
}

func TestApplyDeleteServices(t *testing.T) {
	f := &fakeObjects{}
	sock := serve(t, f)
	file := filepath.Join(t.TempDir(), "svc.yaml")
	os.WriteFile(file, []byte("apiVersion: v1\nkind: Service\n"), 0o644)

	code, out, errOut := runCLI("--socket", sock, "apply", "-f", file)
	want := "service/web created (cluster IP 10.96.1.0)\nprod/pod/web-0 unchanged\n"
	if code != exitOK || out != want {
		t.Errorf("apply: exit %d, out %q (stderr %q), want %q", code, out, errOut, want)
	}
	if len(f.got) != 1 || f.got[0].Documents != "apiVersion: v1\nkind: Service\n" {
		t.Errorf("weftd got %+v", f.got)
	}
	stdin = strings.NewReader("kind: Service # SCTP")
	defer func() { stdin = os.Stdin }()
	code, _, errOut = runCLI("--socket", sock, "apply", "-f", "-")
	if code != exitError || !strings.Contains(errOut, "SCTP: weft serves TCP and UDP only") {
		t.Errorf("apply of a refused object: exit %d, stderr %q", code, errOut)
	}
	code, out, _ = runCLI("--socket", sock, "delete", "-f", file)
	if code != exitOK || out != "service/web not found\n" {
		t.Errorf("delete: exit %d, out %q", code, out)
	}
	code, out, _ = runCLI("--socket", sock, "services")
	for _, w := range []string{"CLUSTER-IP", "10.96.1.0", "http:80/TCP->8080,dns:53/UDP", "2/3", "selector", "12", "headless"} {
		if !strings.Contains(out, w) {
			t.Errorf("services table lacks %q:\n%s", w, out)
		}
	}
	if code != exitOK {
		t.Errorf("services: exit %d", code)
	}
	code, out, _ = runCLI("--socket", sock, "services", "-o", "json")
	if code != exitOK || !strings.Contains(out, `"target_port": "8080"`) {
		t.Errorf("services -o json: exit %d\n%s", code, out)
	}
	for _, args := range [][]string{{"apply"}, {"apply", "-f", filepath.Join(t.TempDir(), "missing.yaml")}} {
		code, _, errOut := runCLI(append([]string{"--socket", sock}, args...)...)
		if code == exitOK {
			t.Errorf("weft %v succeeded; stderr %q", args, errOut)
		}
	}
}
