package file_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/weftnet/weft/registry"
	"github.com/weftnet/weft/registry/file"
	"github.com/weftnet/weft/registry/registrytest"
)

func TestObjectConformance(t *testing.T) {
	registrytest.RunObjects(t, func(t *testing.T) func(*testing.T) (registry.ObjectStore, io.Closer) {
		dir := t.TempDir()
		return func(t *testing.T) (registry.ObjectStore, io.Closer) {
			r, err := file.Open(file.Config{Dir: dir, PollInterval: 20 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			return r.Objects(), r
		}
	})
}

// TestObjectCorruptFileSkipped: a file that does not decode, or that holds
// another object than its name says, is skipped (and logged once), and the
// rest of the store stays readable.
func TestObjectCorruptFileSkipped(t *testing.T) {
	dir := t.TempDir()
	r, err := file.Open(file.Config{Dir: dir, PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	s := r.Objects()
	ctx := context.Background()
	if _, err := s.Put(ctx, registrytest.Service("default", "good", "10.96.0.10", 80)); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(filepath.Join(dir, "objects", "Service~default~good.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{
		"Service~default~junk.yaml":  "{{{ not yaml",
		"Service~default~liar.yaml":  string(good), // holds Service/default/good
		"Service~default~empty.yaml": "",
	} {
		if err := os.WriteFile(filepath.Join(dir, "objects", name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	objs, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 1 || objs[0].Key() != "Service/default/good" {
		t.Errorf("List = %v, want only Service/default/good", objs)
	}
}
