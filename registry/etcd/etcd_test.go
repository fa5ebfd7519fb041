package etcd_test

import (
	"fmt"
	"os/exec"
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

// BenchmarkAcquireRelease: Acquire+Release cycles per second against a
// real etcd, with its data on tmpfs (etcd's own cost) and on disk (plus
// fsync). Skipped without an etcd binary, CI or not: CI runs no benchmarks.
func BenchmarkAcquireRelease(b *testing.B) {
	if _, err := exec.LookPath(etcdtest.Binary); err != nil {
		b.Skip("no etcd binary on PATH")
	}
	for _, bc := range []struct {
		name  string
		start func(testing.TB) *etcdtest.Server
	}{{"tmpfs", etcdtest.Start}, {"disk", etcdtest.StartOnDisk}} {
		b.Run(bc.name, func(b *testing.B) {
			srv := bc.start(b)
			r, err := etcd.Open(etcd.Config{
				Endpoints: []string{srv.Endpoint()},
				Options:   registry.Options{Subnets: registrytest.Subnets(16)},
			})
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			registrytest.BenchAcquireRelease(b, r)
		})
	}
}
