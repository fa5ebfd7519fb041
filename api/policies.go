package api

import (
	"context"
	"fmt"
	"net/http"
)

// PolicyService is what GET /v1/policies needs from a node: the
// NetworkPolicies it enforces, as compiled. A Service that does not
// implement it answers ErrNotImplemented.
type PolicyService interface {
	Policies(ctx context.Context) (PolicyList, error)
}

// PolicyList is a node's policy snapshot (GET /v1/policies).
type PolicyList struct {
	// Ready is false until the node has read the object store once; until
	// then it denies all pod traffic.
	Ready bool `json:"ready"`
	// Generation counts the node's policy compilations.
	Generation uint64       `json:"generation"`
	Policies   []PolicyInfo `json:"policies"`
}

// PolicyInfo is one NetworkPolicy as a node enforces it.
type PolicyInfo struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Isolates: "Ingress", "Egress" or "Ingress,Egress".
	Isolates     string   `json:"isolates"`
	IngressRules int      `json:"ingress_rules"`
	EgressRules  int      `json:"egress_rules"`
	Selects      []string `json:"selects"` // "namespace/name" of the pods it selects
	// Problem says why the policy is enforced as deny-all for the pods it
	// selects (it does not validate); empty when it is taken as written.
	Problem string `json:"problem,omitempty"`
	// Fingerprint identifies the policy's content (sha256 of its
	// canonical encoding, 12 hex digits): a caller that applied a policy
	// knows which version a node enforces.
	Fingerprint string `json:"fingerprint"`
}

func (s *Server) policyRoutes() {
	ps, ok := s.svc.(PolicyService)
	if !ok {
		ps = noPolicies{}
	}
	s.mux.HandleFunc("GET /v1/policies", handleGet(s, ps.Policies))
}

type noPolicies struct{}

func (noPolicies) Policies(context.Context) (PolicyList, error) {
	return PolicyList{}, fmt.Errorf("this weftd enforces no NetworkPolicies: %w", ErrNotImplemented)
}

// Policies lists the NetworkPolicies the node enforces.
func (c *Client) Policies(ctx context.Context) (PolicyList, error) {
	var v PolicyList
	return v, c.do(ctx, http.MethodGet, "/v1/policies", nil, &v)
}

var _ PolicyService = (*Client)(nil)
