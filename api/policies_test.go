package api

import (
	"context"
	"errors"
	"reflect"
	"testing"
)

type fakePolicies struct{ fakeService }

var wantPolicies = PolicyList{Ready: true, Generation: 4, Policies: []PolicyInfo{{
	Namespace: "shop", Name: "db-from-web", Isolates: "Ingress", IngressRules: 1,
	Selects: []string{"shop/db-0"}, Fingerprint: "0123456789ab",
}}}

func (*fakePolicies) Policies(context.Context) (PolicyList, error) { return wantPolicies, nil }

func TestPolicyEndpoint(t *testing.T) {
	c := NewClient(startServer(t, &fakePolicies{}))
	defer c.Close()
	got, err := c.Policies(testCtx(t))
	if err != nil || !reflect.DeepEqual(got, wantPolicies) {
		t.Fatalf("Policies = %+v, %v; want %+v", got, err, wantPolicies)
	}
	bare := NewClient(startServer(t, &fakeService{}))
	defer bare.Close()
	if _, err := bare.Policies(testCtx(t)); !errors.Is(err, ErrNotImplemented) {
		t.Fatalf("Policies without a policy service: %v, want not implemented", err)
	}
}
