package sim

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// echoStream drives a TCP connection to an echo server: a writer sends a
// counter every 10 ms, a reader checks the echo comes back in order and
// notes when each record arrived. Tests hold it across a disruption (a
// weftd restart) and check that it goes on.
type echoStream struct {
	t        *testing.T
	mu       sync.Mutex
	arrivals []time.Time
	stopc    chan struct{}
	werr     chan error
	rerr     chan error
}

func startEchoStream(t *testing.T, conn net.Conn) *echoStream {
	s := &echoStream{t: t, stopc: make(chan struct{}), werr: make(chan error, 1), rerr: make(chan error, 1)}
	go func() {
		var buf [8]byte
		for i := uint64(0); ; i++ {
			select {
			case <-s.stopc:
				s.werr <- nil
				return
			case <-time.After(10 * time.Millisecond):
			}
			binary.BigEndian.PutUint64(buf[:], i)
			conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
			if _, err := conn.Write(buf[:]); err != nil {
				s.werr <- err
				return
			}
		}
	}()
	go func() {
		var buf [8]byte
		for want := uint64(0); ; want++ {
			conn.SetReadDeadline(time.Now().Add(30 * time.Second))
			if _, err := io.ReadFull(conn, buf[:]); err != nil {
				s.rerr <- err
				return
			}
			if got := binary.BigEndian.Uint64(buf[:]); got != want {
				s.rerr <- errors.New("echo out of order")
				return
			}
			s.mu.Lock()
			s.arrivals = append(s.arrivals, time.Now())
			s.mu.Unlock()
		}
	}()
	return s
}

// received is how many records have come back.
func (s *echoStream) received() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.arrivals)
}

// resumed waits until n more records than at mark have come back; a
// broken stream fails the test.
func (s *echoStream) resumed(mark, n int, timeout time.Duration) bool {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if s.received() >= mark+n {
			return true
		}
		select {
		case err := <-s.rerr:
			s.t.Fatalf("stream broke: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return false
}

// maxGapSince is the longest pause between records from mark on.
func (s *echoStream) maxGapSince(mark int) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maxGap(s.arrivals[max(mark-1, 0):])
}

// stop ends the writer and fails the test if either side failed.
func (s *echoStream) stop() {
	s.t.Helper()
	close(s.stopc)
	if err := <-s.werr; err != nil {
		s.t.Fatalf("writer: %v", err)
	}
	select {
	case err := <-s.rerr:
		s.t.Fatalf("reader: %v", err)
	default:
	}
}
