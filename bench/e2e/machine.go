package main

import (
	"fmt"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// machineCosts are what this machine charges for the two things weft's
// path does many times per gigabyte and the kernel's VXLAN path does
// rarely: entering the kernel, and waking a sleeping thread. Both depend
// on the hypervisor more than on the CPU (a guest whose system calls trap
// to the host pays microseconds where bare metal pays ~100 ns), so the
// e2e block records them beside the ratios: two runs on machines that
// differ here are not comparable.
type machineCosts struct {
	// SyscallNs is one getppid(2) round trip, the cheapest system call:
	// the entry and exit cost every read, write and poll pays.
	SyscallNs float64 `json:"syscall_ns"`
	// WakeUs is half a round trip between two threads that each sleep
	// in read(2) on a pipe until the other writes: one wake-up of a
	// sleeping thread, with its system calls and context switch. The
	// scheduler may run both on one CPU, which then never idles.
	WakeUs float64 `json:"wake_us"`
	// CrossWakeUs is the same with the threads pinned to two CPUs: the
	// woken thread's CPU has nothing else to run. 0 with one CPU.
	CrossWakeUs float64 `json:"cross_wake_us"`
	// IdleRTTUs is one round trip of the pinned pair after both slept
	// idleGap, as each packet of `ping -i 0.01` finds the machine: a
	// VM's vCPU that stayed idle that long has halted to the host (past
	// its halt-polling window), and waking it is an interrupt through
	// the hypervisor. Weft's ping wakes four sleeping threads per round
	// trip (node 1's weftd, node 2's weftd, node 1's weftd again, and
	// ping), the kernel's VXLAN path one (ping). 0 with one CPU.
	IdleRTTUs float64 `json:"idle_rtt_us"`
}

// idleGap is how long the pinned pair sleeps before each timed round
// trip of IdleRTTUs: ping's interval in the e2e ping test.
const idleGap = 10 * time.Millisecond

// measureMachine times each; each figure is the best of a few rounds, so
// a round that other work interrupted does not count.
func measureMachine() (machineCosts, error) {
	var m machineCosts
	const calls = 200_000
	best := time.Duration(1<<63 - 1)
	for range 5 {
		start := time.Now()
		for range calls {
			unix.RawSyscall(unix.SYS_GETPPID, 0, 0, 0)
		}
		best = min(best, time.Since(start))
	}
	m.SyscallNs = float64(best.Nanoseconds()) / calls
	wake, err := pipePingPong(2000, 3, -1, -1, 0)
	if err != nil {
		return m, err
	}
	m.WakeUs = wake.Seconds() * 1e6
	if runtime.NumCPU() > 1 {
		if wake, err = pipePingPong(2000, 3, 0, 1, 0); err != nil {
			return m, err
		}
		m.CrossWakeUs = wake.Seconds() * 1e6
		// 40 trips after idleGap each: 0.4 s a round.
		if wake, err = pipePingPong(40, 3, 0, 1, idleGap); err != nil {
			return m, err
		}
		m.IdleRTTUs = 2 * wake.Seconds() * 1e6
	}
	return m, nil
}

// pinThread locks the calling goroutine to its OS thread and, with cpu >=
// 0, that thread to the CPU. The caller unlocks when done: the thread
// keeps the affinity, so it must not go back to the runtime's pool.
func pinThread(cpu int) error {
	runtime.LockOSThread()
	if cpu < 0 {
		return nil
	}
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return fmt.Errorf("pin to CPU %d: %w", cpu, err)
	}
	return nil
}

// pipePingPong bounces one byte between two OS threads over two pipes
// trips times a round and returns the best round's time per one-way
// wake-up. The threads run on CPUs cpuA and cpuB (-1: wherever the
// scheduler puts them); a pinned thread exits with its goroutine instead
// of going back to the runtime. With gap > 0 the pinging thread sleeps
// that long before each trip, and only the trips are timed.
func pipePingPong(trips, rounds, cpuA, cpuB int, gap time.Duration) (time.Duration, error) {
	var ab, ba [2]int // ab: ping side to echo side; ba: back
	if err := unix.Pipe2(ab[:], unix.O_CLOEXEC); err != nil {
		return 0, fmt.Errorf("pipe: %w", err)
	}
	if err := unix.Pipe2(ba[:], unix.O_CLOEXEC); err != nil {
		unix.Close(ab[0])
		unix.Close(ab[1])
		return 0, fmt.Errorf("pipe: %w", err)
	}
	// Each side closes the two ends it uses when it stops, for whatever
	// reason: the other side's read then sees end of file and stops too,
	// so neither can block for ever.
	echoed := make(chan error, 1)
	go func() {
		echoed <- echoSide(ab[0], ba[1], cpuB)
	}()
	type result struct {
		d   time.Duration
		err error
	}
	res := make(chan result, 1)
	go func() {
		d, err := pingSide(ab[1], ba[0], trips, rounds, cpuA, gap)
		res <- result{d, err}
	}()
	r := <-res
	if err := <-echoed; r.err == nil && err != nil {
		r.err = fmt.Errorf("pipe echo: %w", err)
	}
	if r.err != nil {
		return 0, r.err
	}
	return r.d / time.Duration(2*trips), nil
}

// echoSide reads a byte from in and writes it to out until in ends, on
// CPU cpu: blocking read(2)s on its own OS thread, so each byte wakes a
// thread that sleeps in the kernel, as a parked weftd worker or a pod's
// socket reader does.
func echoSide(in, out, cpu int) error {
	defer unix.Close(in)
	defer unix.Close(out)
	if err := pinThread(cpu); err != nil {
		return err
	}
	if cpu < 0 {
		defer runtime.UnlockOSThread()
	}
	b := []byte{0}
	for {
		n, err := unix.Read(in, b)
		if err != nil || n == 0 {
			return err // n == 0: the ping side is done
		}
		if _, err := unix.Write(out, b); err != nil {
			return err
		}
	}
}

// pingSide writes a byte to out and reads the echo from in, trips times a
// round, on CPU cpu, sleeping gap before each trip, and returns the best
// round's time spent in the trips.
func pingSide(out, in, trips, rounds, cpu int, gap time.Duration) (time.Duration, error) {
	defer unix.Close(in)
	defer unix.Close(out)
	if err := pinThread(cpu); err != nil {
		return 0, err
	}
	if cpu < 0 {
		defer runtime.UnlockOSThread()
	}
	b := []byte{0}
	best := time.Duration(1<<63 - 1)
	sleep := unix.NsecToTimespec(gap.Nanoseconds())
	for range rounds {
		var took time.Duration
		for range trips {
			if gap > 0 {
				// nanosleep(2) on this locked thread: the thread, not
				// just the goroutine, sleeps, and its CPU idles.
				unix.Nanosleep(&sleep, nil)
			}
			start := time.Now()
			if _, err := unix.Write(out, b); err != nil {
				return 0, fmt.Errorf("pipe write: %w", err)
			}
			if n, err := unix.Read(in, b); err != nil || n == 0 {
				return 0, fmt.Errorf("pipe read: echo side stopped (%v)", err)
			}
			took += time.Since(start)
		}
		best = min(best, took)
	}
	return best, nil
}
