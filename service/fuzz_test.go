package service

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/weftnet/weft/objects"
)

// FuzzCompile: any input either fails to decode or check with an error,
// or compiles into frontends the switch accepts; nothing panics. Seeds are
// the YAML files in testdata/.
func FuzzCompile(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.yaml")
	for _, p := range seeds {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		objs, err := objects.Decode(bytes.NewReader(in))
		if err != nil {
			return
		}
		// Compile must cope with whatever the store holds, checked or not.
		checkSwitchTakes(t, Compile(Input{Node: "n1", CIDRs: testCIDRs, Objects: objs}).Specs)
		stored, err := CheckApply(nil, objs, testCIDRs)
		if err != nil {
			return
		}
		res := Compile(Input{Node: "n1", CIDRs: testCIDRs, Objects: stored})
		checkSwitchTakes(t, res.Specs)
		for _, s := range res.Services {
			if s.Skipped != "" && s.Skipped[:min(8, len(s.Skipped))] == "invalid:" {
				t.Errorf("CheckApply accepted %s/%s but Compile finds it %s", s.Namespace, s.Name, s.Skipped)
			}
		}
	})
}
