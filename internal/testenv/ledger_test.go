package testenv

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ownerEnv makes the test binary a test process that makes things and
// then waits to be killed: it records a unique name and makes a namespace
// NAME-x, records a directory and leaves a process running that names a
// file in it (one that escaped any parent-death signal), and prints
// "NAME DIR PID".
const ownerEnv = "WEFT_TESTENV_OWNER"

func TestMain(m *testing.M) {
	if os.Getenv(ownerEnv) != "" {
		if err := owner(); err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		time.Sleep(time.Hour) // until the test kills it
	}
	os.Exit(m.Run())
}

func owner() error {
	name := UniqueName("hnl")
	if out, err := exec.Command("ip", "netns", "add", name+"-x").CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add: %v: %s", err, out)
	}
	dir, err := os.MkdirTemp("", "hnl-")
	if err != nil {
		return err
	}
	RecordPath(dir)
	if err := os.WriteFile(filepath.Join(dir, "f"), nil, 0o644); err != nil {
		return err
	}
	tail := exec.Command("tail", "-f", filepath.Join(dir, "f"))
	tail.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := tail.Start(); err != nil {
		return err
	}
	fmt.Println(name, dir, tail.Process.Pid)
	return nil
}

// startOwner runs an owner process and returns it with what it made.
func startOwner(t *testing.T) (cmd *exec.Cmd, name, dir string, pid int) {
	t.Helper()
	cmd = exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), ownerEnv+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if _, serr := fmt.Sscan(line, &name, &dir, &pid); err != nil || serr != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("owner: %q %v %v", line, err, serr)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		syscall.Kill(pid, syscall.SIGKILL)
		deleteNetns(name + "-x")
		os.RemoveAll(dir)
	})
	return cmd, name, dir, pid
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return !errors.Is(err, os.ErrNotExist)
}

func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// TestSweepStale: what a killed test process made (its namespace, its
// directory, a process naming that directory) is removed by the sweep;
// what a live one made is not touched.
func TestSweepStale(t *testing.T) {
	RequireRoot(t)
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("needs ip (iproute2): run make deps")
	}
	deadCmd, deadName, deadDir, deadPID := startOwner(t)
	_, liveName, liveDir, livePID := startOwner(t)
	deadCmd.Process.Kill() // SIGKILL: no cleanup runs
	deadCmd.Wait()

	var logs []string
	Sweep(func(format string, args ...any) { logs = append(logs, fmt.Sprintf(format, args...)) })
	t.Logf("sweep:\n%s", strings.Join(logs, "\n"))

	if exists(filepath.Join(netnsDir, deadName+"-x")) {
		t.Errorf("namespace %s-x of the killed process is still there", deadName)
	}
	if exists(deadDir) {
		t.Errorf("directory %s of the killed process is still there", deadDir)
	}
	deadline := time.Now().Add(5 * time.Second)
	for alive(deadPID) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if alive(deadPID) {
		t.Errorf("process %d left by the killed process still runs", deadPID)
	}
	if !exists(filepath.Join(netnsDir, liveName+"-x")) || !exists(liveDir) || !alive(livePID) {
		t.Errorf("the sweep touched what a live test process made (namespace %s-x, %s, pid %d)", liveName, liveDir, livePID)
	}
	ledgers, _ := filepath.Glob(filepath.Join(LedgerDir, "run-*.names"))
	for _, l := range ledgers {
		b, _ := os.ReadFile(l)
		if strings.Contains(string(b), "name "+deadName+"\n") {
			t.Errorf("ledger %s of the killed process was not removed", l)
		}
	}
}
