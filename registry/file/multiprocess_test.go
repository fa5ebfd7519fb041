package file_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/registry"
	"github.com/weftnet/weft/registry/file"
	"github.com/weftnet/weft/registry/registrytest"
)

// helperEnv makes the test binary act as one weftd process: acquire the
// nodes named in it, print the leases as JSON, exit.
const helperEnv = "WEFT_REGISTRY_FILE_HELPER"

func TestMain(m *testing.M) {
	if spec := os.Getenv(helperEnv); spec != "" {
		os.Exit(helperMain(spec))
	}
	os.Exit(m.Run())
}

// helperMain acquires each node of "DIR|node1,node2,..." and prints the
// leases, one JSON object per line.
func helperMain(spec string) int {
	dir, nodes, _ := strings.Cut(spec, "|")
	r, err := file.Open(file.Config{Dir: dir, Options: registry.Options{Subnets: registrytest.Subnets(32)}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i, node := range strings.Split(nodes, ",") {
		l, err := r.Acquire(ctx, registry.AcquireRequest{
			Node: node, Underlay: netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)}), TTL: time.Minute,
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		b, _ := json.Marshal(l)
		fmt.Println(string(b))
	}
	return 0
}

// TestProcessesRacing runs several processes acquiring at once on one
// directory, as the weftd processes of the simulation do: the flock must
// keep their subnets distinct.
func TestProcessesRacing(t *testing.T) {
	const procs, perProc = 4, 5
	dir := t.TempDir()
	cmds := make([]*exec.Cmd, procs)
	outs := make([]*strings.Builder, procs)
	for p := range procs {
		var nodes []string
		for i := range perProc {
			nodes = append(nodes, fmt.Sprintf("proc%d-node%d", p, i))
		}
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), helperEnv+"="+dir+"|"+strings.Join(nodes, ","))
		outs[p] = &strings.Builder{}
		cmd.Stdout, cmd.Stderr = outs[p], outs[p]
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds[p] = cmd
	}
	owner := make(map[netip.Prefix]string)
	for p, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("process %d: %v\n%s", p, err, outs[p])
		}
		for _, line := range strings.Split(strings.TrimSpace(outs[p].String()), "\n") {
			var l registry.Lease
			if err := json.Unmarshal([]byte(line), &l); err != nil {
				t.Fatalf("process %d printed %q: %v", p, line, err)
			}
			if o, ok := owner[l.Subnet]; ok {
				t.Errorf("subnet %v given to %s and %s", l.Subnet, o, l.Node)
			}
			owner[l.Subnet] = l.Node
		}
	}
	if len(owner) != procs*perProc {
		t.Errorf("%d distinct subnets, want %d", len(owner), procs*perProc)
	}
}
