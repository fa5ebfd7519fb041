package file_test

import (
	"testing"

	"github.com/weftnet/weft/registry"
	"github.com/weftnet/weft/registry/file"
	"github.com/weftnet/weft/registry/registrytest"
)

func TestConformance(t *testing.T) {
	registrytest.Run(t, func(t *testing.T, p registrytest.Params) func(*testing.T) registry.Registry {
		dir := t.TempDir()
		return func(t *testing.T) registry.Registry {
			r, err := file.Open(file.Config{
				Dir: dir,
				Options: registry.Options{
					Subnets:      p.Subnets,
					ReclaimAfter: p.ReclaimAfter,
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
	})
}

func BenchmarkAcquireRelease(b *testing.B) {
	r, err := file.Open(file.Config{Dir: b.TempDir(), Options: registry.Options{Subnets: registrytest.Subnets(16)}})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	registrytest.BenchAcquireRelease(b, r)
}
