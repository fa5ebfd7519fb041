package file

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"syscall"
)

// The change log, DIR/changes, is how a watcher learns what to re-read
// without reading everything: every change of a node file that a watcher
// cannot foresee appends the node's name, one per line. Those are
// Acquire, Release and reclaim (under the claim lock), and a renewal that
// came so late that a watcher may already have seen the lease expire. An
// on-time renewal appends nothing: it only moves the expiry, and a watcher
// re-reads a lease's file when the expiry it knows has passed (watch.go).
//
// The log is a hint, not a record: it is appended without fsync (after a
// crash every watcher on this machine starts afresh and reads everything),
// and a watcher that finds it replaced (another inode) or shorter than
// where it stopped reads every file again. One write(2) with O_APPEND
// appends a whole batch of lines at once, so concurrent appenders never
// interleave within a line. A writer holding the claim lock replaces the
// log with an empty one once it passes maxChangeLog.
const (
	changeLogName = "changes"
	maxChangeLog  = 1 << 20
)

// logChanges appends node names to the change log.
func (r *Registry) logChanges(nodes ...string) error {
	if len(nodes) == 0 {
		return nil
	}
	f, err := os.OpenFile(r.changesPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("change log: %w", err)
	}
	defer f.Close()
	if _, err := f.WriteString(strings.Join(nodes, "\n") + "\n"); err != nil {
		return fmt.Errorf("change log: %w", err)
	}
	return nil
}

// trimChangeLog replaces a change log longer than maxChangeLog with an
// empty one; watchers see the new inode and read everything once. Must
// hold the claim lock (so two writers never both replace it).
func (r *Registry) trimChangeLog() error {
	fi, err := os.Stat(r.changesPath)
	if err != nil || fi.Size() <= maxChangeLog {
		return nil
	}
	return writeFileUnsynced(r.dir, changeLogName, nil)
}

// changeReader follows the change log for one watcher.
type changeReader struct {
	path string
	ino  uint64
	off  int64
	rest string // a trailing partial line, completed by the next read
}

// poll returns the node names appended since the last poll, each once.
// all is true
// when the log was replaced, truncated or unreadable since: the caller
// must then re-read everything (the names cannot say what it missed).
func (c *changeReader) poll() (names []string, all bool) {
	f, err := os.Open(c.path)
	if errors.Is(err, fs.ErrNotExist) {
		if c.ino != 0 {
			c.ino, c.off, c.rest = 0, 0, ""
			return nil, true
		}
		return nil, false
	}
	if err != nil {
		return nil, true
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, true
	}
	var ino uint64
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ino = st.Ino
	}
	if ino != c.ino || fi.Size() < c.off {
		// A new log: what it holds so far is covered by reading everything.
		c.ino, c.off, c.rest = ino, fi.Size(), ""
		return nil, true
	}
	if fi.Size() == c.off {
		return nil, false
	}
	b := make([]byte, fi.Size()-c.off)
	n, err := f.ReadAt(b, c.off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, true
	}
	c.off += int64(n)
	text := c.rest + string(b[:n])
	lines := strings.Split(text, "\n")
	c.rest = lines[len(lines)-1]
	seen := make(map[string]bool)
	for _, l := range lines[:len(lines)-1] {
		if l != "" && !seen[l] {
			seen[l] = true
			names = append(names, l)
		}
	}
	return names, false
}

// start positions the reader at the end of the current log: the caller
// is about to read everything, which covers what the log holds so far
// (each writer appends after its file is in place).
func (c *changeReader) start() {
	c.ino, c.off, c.rest = 0, 0, ""
	if fi, err := os.Stat(c.path); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			c.ino = st.Ino
		}
		c.off = fi.Size()
	}
}
