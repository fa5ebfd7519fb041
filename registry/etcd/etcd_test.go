package etcd_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftnet/weft/registry"
	"github.com/weftnet/weft/registry/etcd"
	"github.com/weftnet/weft/registry/etcd/etcdtest"
	"github.com/weftnet/weft/registry/registrytest"
)

var clusterSeq atomic.Int64

// uniqueCluster gives each store its own key prefix on a shared server.
func uniqueCluster() string {
	return fmt.Sprintf("test%d-%d", time.Now().UnixNano(), clusterSeq.Add(1))
}

func TestConformance(t *testing.T) {
	srv := etcdtest.Start(t)
	registrytest.Run(t, func(t *testing.T, p registrytest.Params) func(*testing.T) registry.Registry {
		cluster := uniqueCluster()
		return func(t *testing.T) registry.Registry {
			r, err := etcd.Open(etcd.Config{
				Endpoints: []string{srv.Endpoint()},
				Cluster:   cluster,
				Options:   registry.Options{Subnets: p.Subnets, ReclaimAfter: p.ReclaimAfter},
			})
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
	})
}
