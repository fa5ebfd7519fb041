package sim

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/weftnet/weft/api"
)

// Services in the sim: pods are attached with labels (app=sim and
// sim-pod=<name>) and published by their nodes, objects are applied
// through a node's API (`weft sim apply -f`), and `weft sim up --services`
// applies the example Service below, whose endpoints are every pod's
// peer-report server: `weft sim test` then checks every node and pod ->
// the Service's cluster IP.

// ExampleService is the Service `up --services` applies.
const (
	ExampleServiceName = "sim/echo"
	ExampleClusterIP   = "10.96.0.10"
	ExampleServicePort = 80
)

// ExampleServiceYAML selects every sim pod (label app=sim) and forwards
// port 80 to the matrix's peer-report servers (7777, MatrixOptions.Port's
// default).
const ExampleServiceYAML = `apiVersion: v1
kind: Service
metadata:
  name: echo
  namespace: sim
spec:
  clusterIP: ` + ExampleClusterIP + `
  selector:
    app: sim
  ports:
  - name: echo
    port: 80
    targetPort: 7777
`

// PodNamespace is the Kubernetes namespace sim pods are attached in.
const PodNamespace = "sim"

// podLabels are the labels a sim pod is attached with.
func podLabels(p *Pod) map[string]string {
	return map[string]string{"app": "sim", "sim-pod": p.Name}
}

// Apply stores the objects of docs through the first node whose weftd
// answers (any node would do: they share the registry); in a kube sim it
// applies them to the API server (kubeobjects.go).
func (c *Cluster) Apply(ctx context.Context, docs string) ([]api.ApplyResult, error) {
	if c.Registry == RegistryKube {
		applied, err := c.kubeApply(ctx, docs)
		out := make([]api.ApplyResult, len(applied))
		for i, a := range applied {
			out[i] = a.result
		}
		return out, err
	}
	return c.objectCall(ctx, docs, (*api.Client).Apply)
}

// DeleteObjects removes the objects docs names.
func (c *Cluster) DeleteObjects(ctx context.Context, docs string) ([]api.ApplyResult, error) {
	if c.Registry == RegistryKube {
		return c.kubeDelete(ctx, docs)
	}
	return c.objectCall(ctx, docs, (*api.Client).DeleteObjects)
}

func (c *Cluster) objectCall(ctx context.Context, docs string, call func(*api.Client, context.Context, api.ApplyRequest) ([]api.ApplyResult, error)) ([]api.ApplyResult, error) {
	var errs []error
	for _, n := range c.Nodes {
		if !pidAlive(n.PID) {
			continue
		}
		cl := api.NewClient(n.Socket)
		actx, cancel := context.WithTimeout(ctx, 20*time.Second)
		res, err := call(cl, actx, api.ApplyRequest{Documents: docs})
		cancel()
		cl.Close()
		if err == nil || errors.Is(err, api.ErrBadRequest) {
			return res, err
		}
		errs = append(errs, fmt.Errorf("node %s: %w", n.Name, err))
	}
	if len(errs) == 0 {
		return nil, errors.New("sim: no node's weftd is running")
	}
	return nil, errors.Join(errs...)
}

// WaitService waits until every running node serves the Service ns/name
// with want ready endpoints.
func (c *Cluster) WaitService(ctx context.Context, nsName string, want int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var lag []string
		for _, n := range c.Nodes {
			if !pidAlive(n.PID) {
				continue
			}
			if got := serviceReady(ctx, n, nsName); got != want {
				lag = append(lag, fmt.Sprintf("%s has %d", n.Name, got))
			}
		}
		if len(lag) == 0 {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("service %s: want %d ready endpoints on every node, %s", nsName, want, strings.Join(lag, ", "))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// serviceReady is how many ready endpoints node n serves for ns/name (-1:
// n does not list the Service).
func serviceReady(ctx context.Context, n *Node, nsName string) int {
	cl := api.NewClient(n.Socket)
	defer cl.Close()
	qctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	svcs, err := cl.Services(qctx)
	if err != nil {
		return -1
	}
	for _, s := range svcs {
		if s.Namespace+"/"+s.Name == nsName && s.Skipped == "" {
			return s.Ready
		}
	}
	return -1
}

// ApplyExample applies ExampleServiceYAML and waits until every node
// serves it with every pod as an endpoint.
func (c *Cluster) ApplyExample(ctx context.Context) error {
	if _, err := c.Apply(ctx, ExampleServiceYAML); err != nil {
		return fmt.Errorf("example service: %w", err)
	}
	c.Services = true
	if err := c.save(); err != nil {
		return err
	}
	c.logf("service %s: cluster IP %s port %d -> every pod's :7777", ExampleServiceName, ExampleClusterIP, ExampleServicePort)
	return c.WaitService(ctx, ExampleServiceName, len(c.Pods()), 10*time.Second)
}

// serviceChecks are the matrix's service cells: every node and pod ->
// the example Service's cluster IP, a TCP echo through whichever backend
// Maglev picks. The backend's server reports the client address it saw:
// the client's own, except for a pod that reached itself (hairpin: the
// gateway's, so the reply comes back through weft).
func serviceChecks(ctx context.Context, c *Cluster, endpoints []Endpoint, opts MatrixOptions) []Check {
	if !c.Services {
		return nil
	}
	vip := netip.AddrPortFrom(netip.MustParseAddr(ExampleClusterIP), ExampleServicePort)
	if opts.Port != 7777 {
		return []Check{{Name: "service", Detail: ExampleServiceName, Error: "the example service targets port 7777; run the test with the default --port"}}
	}
	out := make([]Check, len(endpoints))
	done := make(chan struct{})
	for i, e := range endpoints {
		go func() {
			defer func() { done <- struct{}{} }()
			ch := Check{Name: "service", Detail: fmt.Sprintf("%s -> %s %s", e.Name, ExampleServiceName, vip)}
			peer, errText := tcpCheck(ctx, e.Netns, vip)
			if errText != "" {
				ch.Error = errText
			} else {
				ch.Detail += ": backend saw " + peer.String()
			}
			out[i] = ch
		}()
	}
	for range endpoints {
		<-done
	}
	return out
}
