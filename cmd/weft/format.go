package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/weftnet/weft/packet"
)

// emit writes v as indented JSON with -o json, or fills a text table otherwise.
func (c *cli) emit(v any, fill func(t *table)) error {
	if c.output == outJSON {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	t := &table{tw: tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)}
	fill(t)
	return t.tw.Flush()
}

// table is an aligned text table.
type table struct{ tw *tabwriter.Writer }

// row writes one line of cells.
func (t *table) row(cells ...string) {
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

// kv writes "key  value" lines, for one-record outputs.
func (t *table) kv(key, value string) { t.row(key, value) }

func addr(a netip.Addr) string {
	if !a.IsValid() {
		return "-"
	}
	return a.String()
}

func prefix(p netip.Prefix) string {
	if !p.IsValid() {
		return "-"
	}
	return p.String()
}

func mac(m packet.MAC) string {
	if m.IsZero() {
		return "-"
	}
	return m.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// count formats a count that may be api.Unknown.
func count(n int) string {
	if n < 0 {
		return "-"
	}
	return fmt.Sprint(n)
}

// age rounds d for a table: two units at most ("3m12s", "5h4m", "2d3h").
func age(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < 10*time.Second:
		return d.Round(100 * time.Millisecond).String()
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		d = d.Round(time.Second)
		return fmt.Sprintf("%dm%ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		d = d.Round(time.Minute)
		return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	default:
		d = d.Round(time.Hour)
		return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
	}
}

// until says when t comes relative to now: "in 25s" or "expired 3s ago".
func until(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	if d := t.Sub(now); d >= 0 {
		return "in " + age(d)
	}
	return "expired " + age(now.Sub(t)) + " ago"
}

// ago says how long before now t was: "3m12s ago".
func ago(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return age(now.Sub(t)) + " ago"
}

// byteSize formats a byte count in IEC units ("1.5MiB").
func byteSize(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// podIDs shows pod IDs in a table: cut to 12 characters, the way docker
// and crictl show container IDs, unless --no-trunc.
type podIDs struct {
	whole bool // --no-trunc
	cut   bool // an ID was cut
}

func podIDFlag(fs *flag.FlagSet) *podIDs {
	p := &podIDs{}
	fs.BoolVar(&p.whole, "no-trunc", false, "show pod IDs whole (the table cuts them to 12 characters)")
	return p
}

func (p *podIDs) show(id string) string {
	if len(id) > 12 && !p.whole {
		p.cut = true
		return id[:12]
	}
	return id
}

// note tells on stderr, after a table that cut an ID, how to see it whole.
func (p *podIDs) note(c *cli, cmd string) {
	if p.cut {
		fmt.Fprintf(c.stderr, "weft %s: pod IDs cut to 12 characters; weft %s --no-trunc (or -o json) shows them whole\n", cmd, cmd)
	}
}

// podName is "namespace/name" when known, else "-".
func podName(ns, name string) string {
	switch {
	case name == "":
		return "-"
	case ns == "":
		return name
	}
	return ns + "/" + name
}
