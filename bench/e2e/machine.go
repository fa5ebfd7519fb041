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
	// sleeping thread, with its system calls and context switch.
	WakeUs float64 `json:"wake_us"`
}

// measureMachine times both; each figure is the best of a few rounds, so
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
	wake, err := pipePingPong(2000, 3)
	if err != nil {
		return m, err
	}
	m.WakeUs = wake.Seconds() * 1e6
	return m, nil
}

// pipePingPong bounces one byte between two OS threads over two pipes
// trips times and returns the best round's time per one-way wake-up.
func pipePingPong(trips, rounds int) (time.Duration, error) {
	var ab, ba [2]int
	if err := unix.Pipe2(ab[:], unix.O_CLOEXEC); err != nil {
		return 0, fmt.Errorf("pipe: %w", err)
	}
	defer unix.Close(ab[0])
	defer unix.Close(ab[1])
	if err := unix.Pipe2(ba[:], unix.O_CLOEXEC); err != nil {
		return 0, fmt.Errorf("pipe: %w", err)
	}
	defer unix.Close(ba[0])
	defer unix.Close(ba[1])

	// The echoing thread: blocking read(2)s on its own OS thread, so each
	// byte wakes a thread that sleeps in the kernel, as a parked weftd
	// worker or a pod's socket reader does. It stops after trips*rounds
	// bytes, or at its first error (the pipes closed when we fail).
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		b := []byte{0}
		for range trips * rounds {
			if _, err := unix.Read(ab[0], b); err != nil {
				done <- err
				return
			}
			if _, err := unix.Write(ba[1], b); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b := []byte{0}
	best := time.Duration(1<<63 - 1)
	for range rounds {
		start := time.Now()
		for range trips {
			if _, err := unix.Write(ab[1], b); err != nil {
				return 0, fmt.Errorf("pipe write: %w", err)
			}
			if _, err := unix.Read(ba[0], b); err != nil {
				return 0, fmt.Errorf("pipe read: %w", err)
			}
		}
		best = min(best, time.Since(start))
	}
	if err := <-done; err != nil {
		return 0, fmt.Errorf("pipe echo: %w", err)
	}
	return best / time.Duration(2*trips), nil
}
