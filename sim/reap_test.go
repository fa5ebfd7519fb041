package sim

import (
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// TestKillWaitsUntilReaped is issue 12 item 11: the sim restarted a killed
// weftd as soon as /proc showed it as a zombie, but a zombie's threads may
// still be exiting and holding its sockets: the new weftd failed with
// "bind: address already in use". Kill (and Stop) must return only once
// the process's /proc entry is gone, that is, once it was reaped.
func TestKillWaitsUntilReaped(t *testing.T) {
	for _, how := range []string{"kill", "stop"} {
		t.Run(how, func(t *testing.T) {
			cmd := exec.Command("sleep", "60")
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			pid := cmd.Process.Pid
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
			// The parent reaps late, as a busy one would: until then the
			// killed process is a zombie.
			const reapAfter = 400 * time.Millisecond
			reaped := make(chan struct{})
			go func() {
				defer close(reaped)
				time.Sleep(reapAfter)
				cmd.Wait()
			}()
			c := &Cluster{}
			n := &Node{Name: "r2", PID: pid}
			var err error
			if how == "kill" {
				err = c.Kill(n)
			} else {
				err = c.Stop(n)
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
				t.Errorf("%s returned while /proc/%d (a zombie, reaped after %v) still exists", how, pid, reapAfter)
			}
			<-reaped
		})
	}
}
