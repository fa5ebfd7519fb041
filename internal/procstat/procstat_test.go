package procstat

import (
	"os"
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
