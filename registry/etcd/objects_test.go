package etcd_test

import (
	"io"
	"testing"

	"github.com/weftnet/weft/registry"
	"github.com/weftnet/weft/registry/etcd"
	"github.com/weftnet/weft/registry/etcd/etcdtest"
	"github.com/weftnet/weft/registry/registrytest"
)

func TestObjectConformance(t *testing.T) {
	srv := etcdtest.Start(t)
	registrytest.RunObjects(t, func(t *testing.T) func(*testing.T) (registry.ObjectStore, io.Closer) {
		cluster := uniqueCluster()
		return func(t *testing.T) (registry.ObjectStore, io.Closer) {
			r, err := etcd.Open(etcd.Config{Endpoints: []string{srv.Endpoint()}, Cluster: cluster})
			if err != nil {
				t.Fatal(err)
			}
			return r.Objects(), r
		}
	})
}
