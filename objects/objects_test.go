package objects

import (
	"strings"
	"testing"
)

func TestDecode(t *testing.T) {
	in := `
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: prod, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints: [{addresses: [10.244.1.3], conditions: {ready: true}}]
ports: [{name: http, port: 8080, protocol: TCP}]
---
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress]}
---
apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {ns: x}}
`
	objs, err := Decode(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"Service/default/web", "EndpointSlice/prod/web-1", "NetworkPolicy/x/deny", "Namespace//x"}
	if len(objs) != len(want) {
		t.Fatalf("got %d objects, want %d", len(objs), len(want))
	}
	for i, o := range objs {
		if o.Key() != want[i] {
			t.Errorf("object %d: key %q, want %q", i, o.Key(), want[i])
		}
	}
	if got := objs[0].Service.Spec.Ports[0].TargetPort.IntValue(); got != 8080 {
		t.Errorf("targetPort %d, want 8080", got)
	}
	// Round trip through the registry encoding.
	for _, o := range objs {
		b, err := Encode(o)
		if err != nil {
			t.Fatal(err)
		}
		back, err := DecodeOne(b)
		if err != nil {
			t.Fatalf("%s: decode of encoded: %v\n%s", o, err, b)
		}
		if back.Key() != o.Key() {
			t.Errorf("round trip %s -> %s", o.Key(), back.Key())
		}
	}
}

func TestDecodeRefuses(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"empty", "", "no Kubernetes object"},
		{"no kind", "apiVersion: v1\nmetadata: {name: a}\n", "apiVersion and kind are required"},
		{"unknown kind", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\n", "not one weft consumes"},
		{"wrong version", "apiVersion: networking.k8s.io/v1beta1\nkind: NetworkPolicy\nmetadata: {name: a}\n", `want "networking.k8s.io/v1"`},
		{"unknown field", "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {clusterIp: 10.96.0.1}\n", "unknown field"},
		{"no name", "apiVersion: v1\nkind: Service\nspec: {}\n", "metadata.name is required"},
		{"not yaml", "{{{", "document 1"},
		{"scalar", "just words", "not a Kubernetes object"},
		{"namespaced namespace", "apiVersion: v1\nkind: Namespace\nmetadata: {name: a, namespace: b}\n", "has no metadata.namespace"},
		{"duplicate key (yaml)", "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec:\n  clusterIP: 10.96.0.1\n  clusterIP: 10.96.0.2\n", "already set"},
		{"duplicate key, second document", "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: b, name: c}\n", "document 2"},
		{"duplicate key (json)", `{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a", "name": "b"}}`, "already set"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Decode(strings.NewReader(c.in))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one containing %q", err, c.want)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	f.Add("apiVersion: v1\nkind: Service\nmetadata: {name: a}\n")
	f.Add("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\n{}")
	f.Fuzz(func(t *testing.T, in string) {
		objs, err := Decode(strings.NewReader(in))
		if err != nil {
			return
		}
		for _, o := range objs {
			if o.Meta() == nil || o.Meta().Name == "" {
				t.Fatalf("decoded %s without a name", o.Kind)
			}
		}
	})
}
