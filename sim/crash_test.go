package sim

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/internal/testenv"
	"github.com/weftnet/weft/netdev"
)

// crashedRunEnv makes the test binary a test run that is about to be
// killed: it brings up a one-node sim as the tests do, prints its record
// (JSON, one line) and waits.
const crashedRunEnv = "WEFT_SIM_CRASHED_RUN"

func crashedRun() {
	name := testenv.UniqueName("hnc")
	dir, err := os.MkdirTemp("", "hnc-sim-")
	if err == nil {
		testenv.RecordPath(dir)
		var c *Cluster
		c, err = New(Options{Name: name, Dir: filepath.Join(dir, "sim"), Weftd: weftdBin, DieWithCaller: true})
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			err = c.Up(ctx, 1, 1)
			cancel()
			if err == nil {
				b, _ := json.Marshal(c)
				fmt.Printf("%s\n", b)
				time.Sleep(time.Hour) // until the test kills it
			}
		}
	}
	fmt.Printf("error %v\n", err)
	os.Exit(1)
}

// TestKilledTestLeavesNothing: a test binary killed with SIGKILL (as the
// 20-minute timeout or kill -9 would end it: no cleanup, no TestMain
// epilogue) takes its weftd down with it (parent-death signal), and the
// next run's sweep deletes its namespaces (with their TAPs) and its state
// directory.
func TestKilledTestLeavesNothing(t *testing.T) {
	testenv.RequireRoot(t)
	run := exec.Command(os.Args[0], "-test.run=^$")
	run.Env = append(os.Environ(), crashedRunEnv+"=1")
	run.Stderr = os.Stderr
	out, err := run.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { run.Process.Kill(); run.Wait() }()
	line, err := bufio.NewReader(out).ReadString('\n')
	var c Cluster
	if err != nil || json.Unmarshal([]byte(line), &c) != nil {
		t.Fatalf("crashed run: %q %v", line, err)
	}
	weftd := c.Nodes[0].PID
	namespaces := []string{c.underlayNS(), c.Nodes[0].Netns, c.Nodes[0].Pods[0].Netns}
	if !pidAlive(weftd) {
		t.Fatalf("weftd %d of the crashed run not running before the kill", weftd)
	}
	run.Process.Kill()
	run.Wait()

	deadline := time.Now().Add(10 * time.Second)
	for pidAlive(weftd) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if pidAlive(weftd) {
		stopPID(weftd)
		t.Errorf("weftd %d still running after the test binary that started it was killed", weftd)
	}
	var swept []string
	testenv.Sweep(func(format string, args ...any) { swept = append(swept, fmt.Sprintf(format, args...)) })
	t.Logf("sweep:\n%s", strings.Join(swept, "\n"))
	for _, ns := range namespaces {
		if _, err := os.Stat(netdev.NetnsPath(ns)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("namespace %s of the killed run still there after the sweep", ns)
			netdev.DeleteNetns(ns)
		}
	}
	if _, err := os.Stat(c.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state dir %s of the killed run still there after the sweep", c.Dir)
	}
}
