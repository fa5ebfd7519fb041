package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A -count 3 run as go test prints it, with a second package and a line of
// a benchmark's own output that must not count.
const rawBench = `goos: linux
goarch: amd64
pkg: github.com/weftnet/weft/switch
cpu: AMD EPYC
BenchmarkL2Forward64-2     	75000000	        15.9 ns/op	   0 B/op	       0 allocs/op
BenchmarkL2Forward64-2     	75000000	        21.4 ns/op	   0 B/op	       0 allocs/op
BenchmarkL2Forward64-2     	75000000	        15.7 ns/op	   0 B/op	       0 allocs/op
BenchmarkLPMLookup5000-2   	150000000	         8.03 ns/op
BenchmarkLPMLookup5000-2   	150000000	         7.76 ns/op
BenchmarkLPMLookup5000     some log line of the benchmark
PASS
ok  	github.com/weftnet/weft/switch	12.3s
pkg: github.com/weftnet/weft/bench
BenchmarkReplayRouteEncap64/routes=4-2	  20000	     53965 ns/op	       105.4 wall-ns/frame	        82.10 cpu-ns/frame	       0 B/op	       0 allocs/op
BenchmarkReplayRouteEncap64/routes=4-2	  20000	     87140 ns/op	       170.2 wall-ns/frame	       132.0 cpu-ns/frame	       0 B/op	       0 allocs/op
BenchmarkReplayRouteEncap64/routes=4-2	  20000	     45517 ns/op	        88.9 wall-ns/frame	        82.10 cpu-ns/frame	       0 B/op	       0 allocs/op
`

func TestMedians(t *testing.T) {
	file := filepath.Join(t.TempDir(), "raw.txt")
	if err := os.WriteFile(file, []byte(rawBench), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if err := run([]string{"medians", file}, &out, &errOut); err != nil {
		t.Fatalf("medians: %v\n%s", err, errOut.String())
	}
	t.Logf("\n%s", out.String())
	for _, want := range []string{
		"BenchmarkL2Forward64                ns/op          15.9 [15.7–21.4]      3",
		"BenchmarkLPMLookup5000              ns/op          7.895 [7.76–8.03]     2",
		"BenchmarkReplayRouteEncap64/routes=4  cpu-ns/frame",
		"82.1 [82.1–132]",
		"105.4 [88.9–170.2]",
	} {
		if !strings.Contains(collapse(out.String()), collapse(want)) {
			t.Errorf("output lacks %q", want)
		}
	}
	if n := strings.Count(out.String(), "allocs/op"); n != 2 {
		t.Errorf("%d allocs/op lines, want 2 (L2Forward64, RouteEncap64)", n)
	}
	if err := run([]string{"medians", os.DevNull}, &out, &errOut); err == nil {
		t.Error("medians of an empty input: no error")
	}
}

// collapse squeezes runs of spaces, so the test does not depend on the
// column widths.
func collapse(s string) string { return strings.Join(strings.Fields(s), " ") }
