package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// The integrity check sends a known byte stream over TCP from pod 1 to pod
// 2 and compares SHA-256 sums: the offload path writes coalesced frames
// CHECKSUM_PARTIAL, so the receiving stack would not notice corrupted
// payload by itself. Both ends are this binary re-run inside the pods'
// namespaces (helper modes below).

const (
	helperSink   = "__e2e-tcp-sink"
	helperSource = "__e2e-tcp-source"
	integrityLen = 256 << 20
	integrityPrt = "5299"
)

// runHelper runs a helper mode if args name one, and reports whether it did.
func runHelper(args []string) (bool, int) {
	if len(args) < 2 {
		return false, 0
	}
	switch args[0] {
	case helperSink:
		return true, tcpSink(args[1])
	case helperSource:
		if len(args) < 3 {
			return true, 2
		}
		n, err := strconv.Atoi(args[2])
		if err != nil {
			return true, 2
		}
		return true, tcpSource(args[1], n)
	}
	return false, 0
}

// pattern fills b with the stream's bytes from offset off (xorshift of the
// 8-byte block index: cheap, and no two blocks alike).
func pattern(b []byte, off int) {
	for i := range b {
		blk := uint64((off + i) / 8)
		x := blk*0x9E3779B97F4A7C15 + 1
		x ^= x >> 31
		x *= 0xBF58476D1CE4E5B9
		x ^= x >> 29
		b[i] = byte(x >> (8 * ((off + i) % 8)))
	}
}

func tcpSink(addr string) int {
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer ln.Close()
	fmt.Println("listening")
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(30 * time.Second))
	c, err := ln.Accept()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("%d %s\n", n, hex.EncodeToString(h.Sum(nil)))
	return 0
}

func tcpSource(addr string, total int) int {
	c, err := net.DialTimeout("tcp4", addr, 10*time.Second)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for off := 0; off < total; off += len(buf) {
		b := buf[:min(len(buf), total-off)]
		pattern(b, off)
		h.Write(b)
		if _, err := c.Write(b); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	fmt.Printf("%d %s\n", total, hex.EncodeToString(h.Sum(nil)))
	return 0
}

// checkIntegrity runs the helpers in the pods and compares the sums.
func (s *weftSim) checkIntegrity(ctx context.Context) (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	cctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	sink := inNetns(cctx, s.pod2, self, helperSink, s.pod2IP+":"+integrityPrt)
	out, err := sink.StdoutPipe()
	if err != nil {
		return "", err
	}
	sink.Stderr = os.Stderr
	if err := sink.Start(); err != nil {
		return "", fmt.Errorf("tcp sink: %w", err)
	}
	defer sink.Wait()
	first := make([]byte, len("listening\n"))
	if _, err := io.ReadFull(out, first); err != nil {
		return "", fmt.Errorf("tcp sink did not start: %w", err)
	}
	src, err := inNetns(cctx, s.pod1, self, helperSource, s.pod2IP+":"+integrityPrt, strconv.Itoa(integrityLen)).Output()
	if err != nil {
		return "", fmt.Errorf("tcp source: %w", err)
	}
	rest, err := io.ReadAll(out)
	if err != nil {
		return "", err
	}
	sent, got := strings.TrimSpace(string(src)), strings.TrimSpace(string(rest))
	if sent != got {
		return "", fmt.Errorf("TCP stream pod 1 -> pod 2 arrived changed: sent %q, received %q", sent, got)
	}
	return fmt.Sprintf("%d MiB pod 1 -> pod 2 over TCP, SHA-256 equal", integrityLen>>20), nil
}
