package service

import (
	"strings"
	"testing"
)

func TestNodePorts(t *testing.T) {
	stored := decode(t, `---
apiVersion: v1
kind: Service
metadata: {name: old}
spec: {type: NodePort, clusterIP: 10.96.0.50, ports: [{port: 80, nodePort: 30080}]}
`)
	svc := func(name, spec string) string {
		return `{apiVersion: v1, kind: Service, metadata: {name: ` + name + `}, spec: ` + spec + `}`
	}
	tests := []struct {
		name, yaml string
		err        string // substring; "" = accepted
		want       map[string][]int32
	}{
		{name: "given", yaml: svc("a", `{type: NodePort, clusterIP: 10.96.0.51, ports: [{port: 80, nodePort: 30081}]}`), want: map[string][]int32{"a": {30081}}},
		{name: "allocated lowest free", yaml: svc("a", `{type: NodePort, clusterIP: 10.96.0.51, ports: [{name: a, port: 80}, {name: b, port: 81}]}`), want: map[string][]int32{"a": {30000, 30001}}},
		{name: "taken by another", yaml: svc("a", `{type: NodePort, clusterIP: 10.96.0.51, ports: [{port: 80, nodePort: 30080}]}`), err: "spec.ports[0].nodePort 30080: already allocated to Service default/old"},
		{name: "two in one apply", yaml: svc("a", `{type: NodePort, clusterIP: 10.96.0.51, ports: [{port: 80, nodePort: 30090}]}`) + "\n---\n" + svc("b", `{type: NodePort, clusterIP: 10.96.0.52, ports: [{port: 80, nodePort: 30090}]}`), err: "nodePort 30090: already allocated to Service default/a"},
		{name: "allocation leaves a named one", yaml: svc("a", `{type: NodePort, clusterIP: 10.96.0.51, ports: [{port: 80}]}`) + "\n---\n" + svc("b", `{type: NodePort, clusterIP: 10.96.0.52, ports: [{port: 80, nodePort: 30000}]}`), want: map[string][]int32{"a": {30001}, "b": {30000}}},
		{name: "replace keeps its own", yaml: svc("old", `{type: NodePort, clusterIP: 10.96.0.50, ports: [{port: 80}]}`), want: map[string][]int32{"old": {30080}}},
		{name: "tcp and udp share", yaml: svc("dns", `{type: NodePort, clusterIP: 10.96.0.53, ports: [{name: u, port: 53, protocol: UDP, nodePort: 30053}, {name: t, port: 53, nodePort: 30053}]}`), want: map[string][]int32{"dns": {30053, 30053}}},
		{name: "one protocol twice", yaml: svc("a", `{type: NodePort, clusterIP: 10.96.0.51, ports: [{name: a, port: 80, nodePort: 30070}, {name: b, port: 81, nodePort: 30070}]}`), err: "nodePort 30070: given twice for TCP"},
		{name: "out of range", yaml: svc("a", `{type: NodePort, clusterIP: 10.96.0.51, ports: [{port: 80, nodePort: 8080}]}`), err: "outside the node port range 30000-32767"},
		{name: "not a NodePort service", yaml: svc("a", `{clusterIP: 10.96.0.51, ports: [{port: 80, nodePort: 30100}]}`), err: "a Service of type ClusterIP has no node ports"},
		{name: "bad policy", yaml: svc("a", `{type: NodePort, externalTrafficPolicy: Nearest, clusterIP: 10.96.0.51, ports: [{port: 80}]}`), err: `externalTrafficPolicy "Nearest"`},
		{name: "deleted port frees nothing held by others", yaml: svc("old", `{type: ClusterIP, clusterIP: 10.96.0.50, ports: [{port: 80}]}`) + "\n---\n" + svc("a", `{type: NodePort, clusterIP: 10.96.0.51, ports: [{port: 80, nodePort: 30080}]}`), want: map[string][]int32{"a": {30080}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := CheckApply(stored, decode(t, tc.yaml), testCIDRs)
			switch {
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("err %v, want one containing %q", err, tc.err)
			case tc.err == "" && err != nil:
				t.Fatalf("refused: %v", err)
			}
			for _, o := range out {
				want, ok := tc.want[o.Service.Name]
				if !ok {
					continue
				}
				var got []int32
				for _, p := range o.Service.Spec.Ports {
					got = append(got, p.NodePort)
				}
				if len(got) != len(want) {
					t.Fatalf("%s node ports %v, want %v", o.Service.Name, got, want)
				}
				for i := range got {
					if got[i] != want[i] {
						t.Errorf("%s node ports %v, want %v", o.Service.Name, got, want)
					}
				}
			}
		})
	}
}
