package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
)

var policiesCmd = &command{
	name:     "policies",
	aliases:  []string{"netpol"},
	summary:  "NetworkPolicies as this node enforces them: what each isolates and selects",
	synopsis: "[flags]",
	help: `List the NetworkPolicies in the registry as this node compiled them: the
directions each isolates (Ingress, Egress), its rule counts, the pods it
selects, and a fingerprint of its content. A policy that does not validate
is enforced as deny-all for the pods it selects and says why. Until the node
has read the object store once it is not ready and denies all pod traffic.

Examples:
  weft policies
  weft apply -f deny-all.yaml && weft policies -o json | jq '.policies[].selects'`,
	setup: func(fs *flag.FlagSet) func(context.Context, *cli) error {
		return func(ctx context.Context, c *cli) error {
			list, err := c.client().Policies(ctx)
			if err != nil {
				return err
			}
			return c.emit(list, func(t *table) {
				if !list.Ready {
					t.row("not ready: the object store has not been read yet; all pod traffic is denied")
					return
				}
				if len(list.Policies) == 0 {
					t.row("no policies: every pod accepts everything")
					return
				}
				t.row("NAMESPACE", "NAME", "ISOLATES", "RULES(IN/EG)", "SELECTS", "FINGERPRINT", "PROBLEM")
				for _, p := range list.Policies {
					t.row(p.Namespace, p.Name, orDash(p.Isolates), fmt.Sprintf("%d/%d", p.IngressRules, p.EgressRules),
						orDash(strings.Join(p.Selects, ",")), orDash(p.Fingerprint), orDash(p.Problem))
				}
			})
		}
	},
}
