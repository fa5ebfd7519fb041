package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/weftnet/weft/internal/procstat"
)

func cpuTime(pid int) (time.Duration, error)   { return procstat.CPU(pid) }
func procStart(pid int) (time.Time, error)     { return procstat.Start(pid) }
func rss(pid int) (cur, peak int64, err error) { return procstat.Mem(pid) }
func loadavg() string                          { return procstat.LoadAvg() }

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func parseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 60000 {
			return nil, fmt.Errorf("SCALE_N: %q is not a lease count in 1..60000", f)
		}
		out = append(out, n)
	}
	return out, nil
}

const header = "| leases | converge | CPU to converge | RSS at converge | change applied | vanish applied | CPU change+vanish | idle CPU | RSS idle | peak RSS |\n" +
	"| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"

func formatRow(r result) string {
	row := fmt.Sprintf("| %d | %s | %s | %s | %s | %s | %s | %.2f%% | %s | %s |",
		r.N, ms(r.Converge), ms(r.ConvergeCPU), mib(r.RSSConverged), ms(r.Change), ms(r.Vanish), ms(r.ChangeCPU),
		100*r.IdleCPU, mib(r.RSS), mib(r.PeakRSS))
	if r.Note != "" {
		row += " *"
	}
	return row
}

func ms(d time.Duration) string {
	if d >= 10*time.Second {
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
	return fmt.Sprintf("%d ms", d.Milliseconds())
}

func mib(kib int64) string { return fmt.Sprintf("%.0f MiB", float64(kib)/1024) }

// report is the table with the command and conditions that produced it.
func report(rows []result, idle time.Duration, started time.Time, loadBefore, loadAfter string) string {
	var b strings.Builder
	commit, _ := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	fmt.Fprintf(&b, "`make bench-scale` (go run ./bench/scale; SCALE_N=%s SCALE_IDLE=%s), %s UTC, commit %s, %s, %d CPUs; load before: %s, after: %s.\n\n",
		envOr("SCALE_N", "100,1000,5000,20000"), idle, started.Format("2006-01-02 15:04"), strings.TrimSpace(string(commit)),
		runtime.Version(), runtime.NumCPU(), loadBefore, loadAfter)
	b.WriteString(header)
	for _, r := range rows {
		b.WriteString(formatRow(r) + "\n")
	}
	b.WriteString("\nPrefill (not part of any figure): ")
	for i, r := range rows {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%d leases %s", r.N, ms(r.Prefill))
	}
	b.WriteString(".\n")
	for _, r := range rows {
		if r.Note != "" {
			fmt.Fprintf(&b, "\n\\* %d leases: %s.\n", r.N, r.Note)
		}
	}
	return b.String()
}

// writeDocs replaces what lies between the scale markers of path with
// table.
func writeDocs(path, table string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	const begin, end = "<!-- scale:begin -->", "<!-- scale:end -->"
	s := string(b)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i {
		return fmt.Errorf("%s: no %s ... %s section", path, begin, end)
	}
	s = s[:i+len(begin)] + "\n" + table + s[j:]
	return os.WriteFile(path, []byte(s), 0o644)
}

func copyFile(from, to string) {
	src, err := os.Open(from)
	if err != nil {
		return
	}
	defer src.Close()
	dst, err := os.Create(to)
	if err != nil {
		return
	}
	defer dst.Close()
	io.Copy(dst, src)
}
