package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// medians implements `weft-bench medians [FILE...]`: it reads raw
// `go test -bench -count N` output (files, or stdin) and prints, for each
// benchmark and unit, the median and [min–max] over its runs, so that no
// figure in docs/BENCHMARKS.md is a median taken by hand.
func medians(args []string, stdout, stderr io.Writer) error {
	var rs []benchRuns
	read := func(r io.Reader) error {
		var err error
		rs, err = parseBench(r, rs)
		return err
	}
	if len(args) == 0 {
		if err := read(os.Stdin); err != nil {
			return err
		}
	}
	for _, name := range args {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		err = read(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	if len(rs) == 0 {
		return fmt.Errorf("no benchmark results in the input")
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "package\tbenchmark\tunit\tmedian [min–max]\truns")
	for _, r := range rs {
		for _, u := range r.units {
			v := r.values[u]
			med, lo, hi := medianRange(v)
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s [%s–%s]\t%d\n", r.pkg, r.name, u, formatFigure(med), formatFigure(lo), formatFigure(hi), len(v))
		}
	}
	return tw.Flush()
}

// benchRuns is every run of one benchmark of one package.
type benchRuns struct {
	pkg, name string
	units     []string // in the order the output gives them
	values    map[string][]float64
}

// parseBench adds the results in r (go test -bench output, "pkg:" lines
// naming the package of the lines that follow) to rs.
func parseBench(r io.Reader, rs []benchRuns) ([]benchRuns, error) {
	pkg := ""
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = strings.TrimSpace(p)
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") || len(f)%2 != 0 {
			continue
		}
		if _, err := strconv.ParseInt(f[1], 10, 64); err != nil {
			continue // not a result line (a benchmark's own log output)
		}
		name := trimProcs(f[0])
		i := slices.IndexFunc(rs, func(b benchRuns) bool { return b.pkg == pkg && b.name == name })
		if i < 0 {
			rs = append(rs, benchRuns{pkg: pkg, name: name, values: map[string][]float64{}})
			i = len(rs) - 1
		}
		b := &rs[i]
		for j := 2; j+1 < len(f); j += 2 {
			v, err := strconv.ParseFloat(f[j], 64)
			if err != nil {
				return rs, fmt.Errorf("%q: value %q: %w", line, f[j], err)
			}
			u := f[j+1]
			if _, seen := b.values[u]; !seen {
				b.units = append(b.units, u)
			}
			b.values[u] = append(b.values[u], v)
		}
	}
	return rs, sc.Err()
}

// trimProcs drops the -GOMAXPROCS suffix go test adds to a benchmark name.
func trimProcs(name string) string {
	if i := strings.LastIndexByte(name, '-'); i > 0 {
		if _, err := strconv.Atoi(name[i+1:]); err == nil {
			return name[:i]
		}
	}
	return name
}

// medianRange returns the median (the mean of the middle two for an even
// count), minimum and maximum of v.
func medianRange(v []float64) (med, lo, hi float64) {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		med = s[n/2]
	} else {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return med, s[0], s[n-1]
}

// formatFigure prints v with four significant digits, without exponent.
func formatFigure(v float64) string {
	if v >= 10000 || v == float64(int64(v)) {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}
