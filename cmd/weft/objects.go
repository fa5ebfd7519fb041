package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/weftnet/weft/api"
)

// stdin is what `-f -` reads; tests replace it.
var stdin io.Reader = os.Stdin

// readDocuments reads the -f argument: a file, or "-" for standard input.
func readDocuments(path string) (string, error) {
	if path == "" {
		return "", &usageError{msg: "-f FILE (or -f - for standard input) required"}
	}
	var r io.Reader = stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return "", err
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, api.MaxApplyBytes+1))
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > api.MaxApplyBytes {
		return "", fmt.Errorf("%s: more than %d bytes; split it", path, api.MaxApplyBytes)
	}
	return string(b), nil
}

// resultLine is kubectl's "service/web created".
func resultLine(r api.ApplyResult) string {
	s := strings.ToLower(r.Kind) + "/" + r.Name
	if r.Namespace != "" && r.Namespace != "default" {
		s = r.Namespace + "/" + s
	}
	s += " " + r.Action
	if r.ClusterIP != "" && r.Action != api.ActionDeleted && r.Action != api.ActionNotFound {
		s += " (cluster IP " + r.ClusterIP + ")"
	}
	return s
}

func objectCommand(name, summary, help string, call func(*api.Client) func(context.Context, api.ApplyRequest) ([]api.ApplyResult, error)) *command {
	return &command{
		name:     name,
		summary:  summary,
		synopsis: "-f FILE|- [--dry-run] [flags]",
		help:     help,
		setup: func(fs *flag.FlagSet) func(context.Context, *cli) error {
			var file string
			var dry bool
			fs.StringVar(&file, "f", "", "`FILE` of YAML or JSON objects, or - for standard input")
			fs.StringVar(&file, "filename", "", "`FILE`, as -f")
			fs.BoolVar(&dry, "dry-run", false, "check (and allocate cluster IPs) without storing")
			return func(ctx context.Context, c *cli) error {
				docs, err := readDocuments(file)
				if err != nil {
					return err
				}
				res, err := call(c.client())(ctx, api.ApplyRequest{Documents: docs, DryRun: dry})
				if err != nil {
					return err
				}
				return c.emit(res, func(t *table) {
					for _, r := range res {
						line := resultLine(r)
						if dry {
							line += " (dry run)"
						}
						t.row(line)
					}
				})
			}
		},
	}
}

var applyCmd = objectCommand("apply", "store Services, EndpointSlices, NetworkPolicies, Namespaces, Pods in the registry",
	`Store Kubernetes objects in the cluster registry, where every node sees them:
Service, EndpointSlice, NetworkPolicy, Namespace and Pod (labels and named ports
of pods weft runs). weftd decodes them strictly (unknown fields are errors) and
checks Services and EndpointSlices before storing anything: a cluster IP must
lie in the service CIDR and be free, ports are TCP or UDP and non-zero,
endpoints lie in the cluster CIDR. If any object is refused, none is stored. A
Service without a clusterIP gets one allocated, as the API server would.

Examples:
  weft apply -f web-service.yaml
  kubectl create service clusterip web --tcp=80:8080 --dry-run=client -o yaml | weft apply -f -
  weft apply -f policy.yaml --dry-run -o json`,
	func(cl *api.Client) func(context.Context, api.ApplyRequest) ([]api.ApplyResult, error) {
		return cl.Apply
	})

var deleteCmd = objectCommand("delete", "remove the objects a file names from the registry",
	`Remove the objects a file names (by kind, namespace and name) from the cluster
registry. An object that is not stored is reported as "not found".

Examples:
  weft delete -f web-service.yaml`,
	func(cl *api.Client) func(context.Context, api.ApplyRequest) ([]api.ApplyResult, error) {
		return cl.DeleteObjects
	})

var servicesCmd = &command{
	name:     "services",
	aliases:  []string{"svc"},
	summary:  "Services as this node serves them: cluster IP, ports, endpoints",
	synopsis: "[flags]",
	help: `List the Services in the registry as this node compiled them: cluster IP,
ports (name:port/PROTOCOL->targetPort), endpoints ready and total, where the
endpoints come from (EndpointSlice or the selector over pods' labels), and the
new flows this node sent to them. Services weft does not serve say why
(headless, another proxy's, or invalid).

Examples:
  weft services
  weft services -o json | jq -r '.[] | "\(.name) \(.cluster_ip)"'`,
	setup: func(fs *flag.FlagSet) func(context.Context, *cli) error {
		return func(ctx context.Context, c *cli) error {
			svcs, err := c.client().Services(ctx)
			if err != nil {
				return err
			}
			return c.emit(svcs, func(t *table) {
				if len(svcs) == 0 {
					t.row("no services")
					return
				}
				t.row("NAMESPACE", "NAME", "CLUSTER-IP", "PORTS", "ENDPOINTS", "SOURCE", "NEW-FLOWS", "NOTE")
				for _, s := range svcs {
					ports := make([]string, len(s.Ports))
					for i, p := range s.Ports {
						ports[i] = p.String()
					}
					t.row(s.Namespace, s.Name, addr(s.ClusterIP), orDash(strings.Join(ports, ",")),
						fmt.Sprintf("%d/%d", s.Ready, s.Total), s.Source, fmt.Sprint(s.NewFlows), orDash(s.Skipped))
				}
			})
		}
	},
}
