package procstat

import (
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"
)

// TestSelf reads this test process: it has used some CPU, started before
// now and not long before (a test binary), and holds some memory.
func TestSelf(t *testing.T) {
	pid := os.Getpid()
	deadline := time.Now().Add(5 * time.Second)
	for x := 0; time.Now().Before(deadline); x++ { // burn a few ticks of CPU
		if c, err := CPU(pid); err != nil {
			t.Fatal(err)
		} else if c > 20*time.Millisecond {
			break
		}
	}
	if c, _ := CPU(pid); c <= 0 {
		t.Errorf("CPU = %v after a busy loop", c)
	}
	start, err := Start(pid)
	if err != nil {
		t.Fatal(err)
	}
	if age := time.Since(start); age < 0 || age > 10*time.Minute {
		t.Errorf("started %v ago", age)
	}
	rss, peak, err := Mem(pid)
	if err != nil {
		t.Fatal(err)
	}
	if rss <= 0 || peak < rss {
		t.Errorf("rss %d KiB, peak %d KiB", rss, peak)
	}
	if ThreadCPU() <= 0 {
		t.Error("no thread CPU time")
	}
	if LoadAvg() == "?" {
		t.Error("no load average")
	}
	if _, err := CPU(-1); err == nil {
		t.Error("CPU of pid -1: no error")
	}
}

// TestAlive: this process is alive; a child that exited but is not yet
// reaped (a zombie) is not, nor is it once reaped, nor PID 0.
func TestAlive(t *testing.T) {
	if !Alive(os.Getpid()) {
		t.Error("Alive(self) = false")
	}
	if !slices.Contains(PIDs(), os.Getpid()) {
		t.Error("PIDs() does not list this process")
	}
	if Alive(0) || Alive(-1) {
		t.Error("Alive(0 or -1) = true")
	}
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	deadline := time.Now().Add(5 * time.Second)
	for Alive(pid) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if Alive(pid) {
		t.Errorf("child %d exited 5 s ago and is still alive", pid)
	}
	if f, err := statFields(pid); err != nil || f[0] != "Z" {
		t.Errorf("child %d before its reaping: state %v (%v), want a zombie", pid, f, err)
	}
	cmd.Wait()
	if Alive(pid) {
		t.Errorf("child %d alive after it was reaped", pid)
	}
}
