package childproc

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// parentEnv makes the test binary act as the parent in TestMain: it starts
// `sleep 60` with Start, retires a few OS threads (goroutines ending while
// locked to theirs), prints the sleep's PID and waits to be killed.
const parentEnv = "WEFT_CHILDPROC_PARENT"

func TestMain(m *testing.M) {
	if os.Getenv(parentEnv) != "" {
		p, err := Start(exec.Command("sleep", "60"))
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		var wg sync.WaitGroup
		for range 20 {
			wg.Go(func() { runtime.LockOSThread() }) // the runtime retires the thread
		}
		wg.Wait()
		fmt.Println(p.Pid())
		time.Sleep(time.Hour) // until the test kills it
	}
	os.Exit(m.Run())
}

// startTime is field 22 of /proc/PID/stat, "" once the process is gone.
func startTime(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 || f[0] == "Z" {
		return "" // a zombie has exited
	}
	return f[19]
}

// TestChildDiesWithParent kills a parent with SIGKILL (no cleanup of any
// kind runs) and checks that the child it started with Start dies too,
// and that it had survived the parent retiring threads before that.
func TestChildDiesWithParent(t *testing.T) {
	parent := exec.Command(os.Args[0], "-test.run=^$")
	parent.Env = append(os.Environ(), parentEnv+"=1")
	out, err := parent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	defer parent.Process.Kill()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("parent said nothing: %v", err)
	}
	child, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("parent: %q", line)
	}
	start := startTime(child)
	if start == "" {
		t.Fatalf("child %d not running after its parent retired threads", child)
	}
	parent.Process.Kill()
	parent.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for startTime(child) == start {
		if time.Now().After(deadline) {
			syscall.Kill(child, syscall.SIGKILL)
			t.Fatalf("child %d still running 10 s after its parent was killed", child)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestWaitReportsExit(t *testing.T) {
	p, err := Start(exec.Command("sh", "-c", "exit 3"))
	if err != nil {
		t.Fatal(err)
	}
	var ee *exec.ExitError
	if err := p.Wait(); !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Errorf("Wait = %v, want exit status 3", err)
	}
	select {
	case <-p.Done():
	default:
		t.Error("Done not closed after Wait returned")
	}
	if _, err := Start(exec.Command("/nonexistent/weft-no-such-binary")); err == nil {
		t.Error("Start of a missing binary returned no error")
	}
}
