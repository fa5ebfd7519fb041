package ipam

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Environment of a helper child: the test binary re-executed with
// -test.run=^TestHelperProcess$ and these set.
const (
	helperEnv       = "WEFT_IPAM_HELPER" // mode: "alloc" or "churn"
	helperDirEnv    = "WEFT_IPAM_DIR"
	helperSubnetEnv = "WEFT_IPAM_SUBNET"
	helperPrefixEnv = "WEFT_IPAM_PREFIX" // pod ID prefix, unique per child
	helperCountEnv  = "WEFT_IPAM_COUNT"
)

// TestHelperProcess is not a test: it is the body of the child processes
// the multi-process tests start. Run directly, it returns at once.
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		return
	}
	if err := runHelper(mode); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(2)
	}
	os.Exit(0)
}

// runHelper reports on stdout, one line per event, each line one write:
//
//	ready            Open done
//	a <pod>          about to allocate pod/eth0
//	A <pod> <addr>   allocated
//	r <pod>          about to release
//	R <pod>          released
func runHelper(mode string) error {
	n, err := strconv.Atoi(os.Getenv(helperCountEnv))
	if err != nil {
		return fmt.Errorf("bad %s: %w", helperCountEnv, err)
	}
	prefix := os.Getenv(helperPrefixEnv)
	a, err := Open(os.Getenv(helperDirEnv), netip.MustParsePrefix(os.Getenv(helperSubnetEnv)))
	if err != nil {
		return err
	}
	defer a.Close()
	say := func(format string, args ...any) { fmt.Fprintf(os.Stdout, format+"\n", args...) }
	say("ready")
	k := func(i int) Key { return Key{PodID: fmt.Sprintf("%s-%d", prefix, i), IfName: "eth0"} }

	switch mode {
	case "alloc":
		// Wait for the parent's go, so that all children run at once.
		if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
			return fmt.Errorf("wait for go: %w", err)
		}
		for i := range n {
			al, err := a.Allocate(k(i), Meta{})
			if err != nil {
				return err
			}
			say("A %s %s", k(i).PodID, al.Addr)
		}
	case "churn":
		// Allocate and release until killed; keep a few live so the dir
		// always holds some. Bounded in case the parent never kills us.
		const keep = 4
		deadline := time.Now().Add(10 * time.Second)
		for i := 0; i < n && time.Now().Before(deadline); i++ {
			say("a %s", k(i).PodID)
			al, err := a.Allocate(k(i), Meta{PodNamespace: "crash", PodName: prefix})
			if err != nil {
				return err
			}
			say("A %s %s", k(i).PodID, al.Addr)
			if i >= keep {
				say("r %s", k(i-keep).PodID)
				if err := a.Release(k(i - keep)); err != nil {
					return err
				}
				say("R %s", k(i-keep).PodID)
			}
		}
	default:
		return fmt.Errorf("unknown mode %q", mode)
	}
	return nil
}

type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string // closed at EOF
}

func startChild(t *testing.T, ctx context.Context, mode, dir, subnet, prefix string, count int) *child {
	t.Helper()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		helperEnv+"="+mode, helperDirEnv+"="+dir, helperSubnetEnv+"="+subnet,
		helperPrefixEnv+"="+prefix, helperCountEnv+"="+strconv.Itoa(count))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, stdin: stdin, lines: make(chan string, 1024)}
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		if c.cmd.ProcessState == nil {
			_ = c.cmd.Process.Kill()
			for range c.lines {
			}
			_ = c.cmd.Wait()
		}
	})
	return c
}

// waitReady consumes lines up to "ready".
func (c *child) waitReady(timeout time.Duration) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				return errors.New("child exited before ready")
			}
			if l == "ready" {
				return nil
			}
		case <-timer.C:
			return errors.New("child not ready in time")
		}
	}
}

// finish drains the output (the pipe must be read to EOF before Wait) and
// waits for the exit.
func (c *child) finish() ([]string, error) {
	var out []string
	for l := range c.lines {
		out = append(out, l)
	}
	return out, c.cmd.Wait()
}

// TestMultiProcess runs four processes allocating on one directory at once.
func TestMultiProcess(t *testing.T) {
	const children, each = 4, 30
	dir, subnet := t.TempDir(), "10.244.1.0/24"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var cs []*child
	for i := range children {
		cs = append(cs, startChild(t, ctx, "alloc", dir, subnet, fmt.Sprintf("c%d", i), each))
	}
	for _, c := range cs {
		if err := c.waitReady(20 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range cs {
		if _, err := io.WriteString(c.stdin, "go\n"); err != nil {
			t.Fatal(err)
		}
	}
	handed := map[netip.Addr]Key{}
	for i, c := range cs {
		lines, err := c.finish()
		if err != nil {
			t.Fatalf("child %d: %v", i, err)
		}
		for _, l := range lines {
			var pod, addr string
			if _, err := fmt.Sscanf(l, "A %s %s", &pod, &addr); err != nil {
				t.Fatalf("child %d: unexpected line %q", i, l)
			}
			a, k := netip.MustParseAddr(addr), Key{PodID: pod, IfName: "eth0"}
			if prev, dup := handed[a]; dup {
				t.Fatalf("%s handed out to both %s and %s", a, prev, k)
			}
			handed[a] = k
		}
	}
	if len(handed) != children*each {
		t.Fatalf("%d addresses handed out, want %d", len(handed), children*each)
	}
	a := openT(t, dir, subnet)
	list, err := a.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != len(handed) || len(a.Leaked()) != 0 {
		t.Fatalf("on disk: %d allocations and %d leaked, want %d and none", len(list), len(a.Leaked()), len(handed))
	}
	for _, al := range list {
		if handed[al.Addr] != al.Key {
			t.Errorf("%s on disk for %s, handed out to %s", al.Addr, al.Key, handed[al.Addr])
		}
	}
}

// TestCrashLoop SIGKILLs a child at random moments while it allocates and
// releases, then checks what is on disk after every round: nothing handed
// out is lost, nothing released is back, no key holds two addresses, every
// file parses or is leaked, and GC reclaims the leaked and half-done ones.
func TestCrashLoop(t *testing.T) {
	const (
		rounds  = 30
		budget  = 15 * time.Second
		subnet  = "10.244.0.0/22"
		maxKill = 30 // ms
	)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), budget+10*time.Second)
	defer cancel()

	alive := map[Key]netip.Addr{} // handed out, no release begun
	start := time.Now()
	var leakedSeen, uncertainSeen, done int
	for round := range rounds {
		if time.Since(start) > budget {
			t.Logf("time budget spent after %d rounds", round)
			break
		}
		c := startChild(t, ctx, "churn", dir, subnet, fmt.Sprintf("r%d", round), 1<<20)
		// Most rounds kill while the child churns; every fourth at a
		// random moment from exec, which can land inside Open.
		if round%4 != 3 {
			if err := c.waitReady(10 * time.Second); err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
		time.Sleep(time.Duration(1+rng.IntN(maxKill)) * time.Millisecond)
		if err := c.cmd.Process.Kill(); err != nil {
			t.Fatalf("round %d: kill: %v", round, err)
		}
		lines, err := c.finish()
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			// The child must not end by itself: it churns until killed.
			t.Fatalf("round %d: child ended with %v, want killed; output %q", round, err, lines)
		}

		// Replay the child's report into the model.
		uncertain := map[Key]bool{} // allocation or release under way at the kill
		released := map[Key]bool{}
		for _, l := range lines {
			f := strings.Fields(l)
			if len(f) < 2 {
				continue // "ready"
			}
			k := Key{PodID: f[1], IfName: "eth0"}
			switch f[0] {
			case "a", "r":
				uncertain[k] = true
				delete(alive, k)
			case "A":
				delete(uncertain, k)
				alive[k] = netip.MustParseAddr(f[2])
			case "R":
				delete(uncertain, k)
				released[k] = true
			default:
				t.Fatalf("round %d: unexpected line %q", round, l)
			}
		}
		uncertainSeen += len(uncertain)

		onDisk, leaked := scanRaw(t, dir)
		for k, addr := range alive {
			if onDisk[k] != addr {
				t.Fatalf("round %d: %s was handed %s, disk has %v", round, k, addr, onDisk[k])
			}
		}
		for k, addr := range onDisk {
			if _, ok := alive[k]; !ok && !uncertain[k] {
				t.Fatalf("round %d: %s on disk for %s, which holds nothing (released: %v)", round, addr, k, released[k])
			}
		}

		a, err := Open(dir, netip.MustParsePrefix(subnet))
		if err != nil {
			t.Fatalf("round %d: reopen: %v", round, err)
		}
		if got := a.Leaked(); len(got) != len(leaked) {
			t.Fatalf("round %d: Leaked() = %v, raw scan found %v", round, got, leaked)
		}
		leakedSeen += len(leaked)
		used, free := a.Stats()
		if used != len(onDisk)+len(leaked) || used+free != podRangeOf(netip.MustParsePrefix(subnet)).capacity() {
			t.Fatalf("round %d: Stats() = %d, %d; disk has %d + %d leaked", round, used, free, len(onDisk), len(leaked))
		}
		freed, err := a.GC(func(podID, ifname string) bool {
			_, ok := alive[Key{PodID: podID, IfName: ifname}]
			return ok
		})
		if err != nil {
			t.Fatalf("round %d: GC: %v", round, err)
		}
		if want := used - len(alive); len(freed) != want {
			t.Fatalf("round %d: GC freed %d, want %d (everything but the %d alive)", round, len(freed), want, len(alive))
		}
		list, err := a.List()
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != len(alive) || len(a.Leaked()) != 0 {
			t.Fatalf("round %d: after GC %d allocations, %d leaked; want %d, 0", round, len(list), len(a.Leaked()), len(alive))
		}
		a.Close()
		done++
	}
	// A loaded machine may run few rounds in the budget; a few still test.
	if done < 3 {
		t.Fatalf("only %d crash rounds ran in %v", done, budget)
	}
	t.Logf("%d rounds in %v; %d leaked files and %d half-done operations reclaimed by GC",
		done, time.Since(start).Round(time.Millisecond), leakedSeen, uncertainSeen)
}

// scanRaw reads the address files the way a reviewer would, without the
// Allocator (whose loader hides a duplicate key by leaking it): it fails on
// a key stored twice and returns the unreadable files apart.
func scanRaw(t *testing.T, dir string) (byKey map[Key]netip.Addr, leaked []netip.Addr) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	byKey = map[Key]netip.Addr{}
	for _, e := range entries {
		addr, err := netip.ParseAddr(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		r, err := parseRecord(data)
		if err != nil || r.Addr != addr {
			leaked = append(leaked, addr)
			continue
		}
		if prev, dup := byKey[r.key()]; dup {
			t.Fatalf("%s stored in both %s and %s", r.key(), prev, addr)
		}
		byKey[r.key()] = addr
	}
	return byKey, leaked
}
