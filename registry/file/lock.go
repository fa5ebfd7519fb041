package file

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// Two kinds of lock, both flock(2) on a file of their own (a node file
// cannot carry its own lock: every write replaces it by a rename):
//
//	DIR/lock         the claim lock: every change of the claim index and
//	                 every change of a node file other than a renewal
//	                 (Acquire, Release, reclaim)
//	DIR/locks/NAME   node NAME's lock: every write or removal of
//	                 nodes/NAME.json, renewals included
//
// Order: the claim lock first, then node locks. A renewal takes its node's
// lock alone, so it never waits behind other nodes' work (issue 16: with
// one lock for everything, held across two fsyncs, renewals of idle nodes
// queued behind each other on a busy machine until their leases lapsed).
// Lock files are never removed: a waiter may hold an open descriptor of
// one, and a removed-and-recreated file would let two holders in at once.

const (
	claimLockName = "lock"
	nodeLocksDir  = "locks"
)

// lockClaims takes the claim lock.
func (r *Registry) lockClaims(ctx context.Context) (unlock func(), err error) {
	return lockFile(ctx, r.lockPath)
}

// lockNode takes node's lock. The name is a validated node name, so it is
// a plain file name.
func (r *Registry) lockNode(ctx context.Context, node string) (unlock func(), err error) {
	return lockFile(ctx, filepath.Join(r.locksDir, node))
}

// lockFile takes an exclusive flock on path, creating the file if needed.
// flock(2) cannot be interrupted by a context, so it is polled without
// blocking instead (every 1 ms at first, backing off to 20 ms).
func lockFile(ctx context.Context, path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	wait := time.Millisecond
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			// Closing the descriptor drops the flock.
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("flock %s: %w", path, err)
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			f.Close()
			return nil, fmt.Errorf("waiting for lock %s: %w", path, ctx.Err())
		}
		wait = min(2*wait, 20*time.Millisecond)
	}
}
