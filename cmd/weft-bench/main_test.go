package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGenAndReplay(t *testing.T) {
	dir := t.TempDir()
	pcap := filepath.Join(dir, "l2.pcap")
	var out, errb bytes.Buffer
	if err := run([]string{"gen", "-scenario", "l2", "-o", pcap}, &out, &errb); err != nil {
		t.Fatalf("gen: %v\n%s", err, errb.String())
	}
	if fi, err := os.Stat(pcap); err != nil || fi.Size() == 0 {
		t.Fatalf("gen wrote nothing: %v", err)
	}
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"pcap", []string{"replay", "-pcap", pcap, "-duration", "20ms"},
			[]string{"512 frames", "ns/frame", "Mpps", "allocs/frame", "deliver"}},
		{"scenario with routes and fdb", []string{"replay", "-scenario", "route-encap-64", "-routes", "600", "-fdb", "100", "-duration", "20ms", "-runs", "3", "-q"},
			[]string{"600 frames", "600 peer routes", "median:"}},
		{"mix", []string{"replay", "-duration", "20ms"},
			[]string{"scenario mix", "encap", "flood", "decap drop"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if err := run(tc.args, &out, &errb); err != nil {
				t.Fatalf("%v\n%s", err, errb.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}

func TestErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.pcap")
	if err := os.WriteFile(bad, []byte("not a pcap"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no command", nil, "help"},
		{"unknown command", []string{"frobnicate"}, "unknown command"},
		{"gen without -o", []string{"gen"}, "-o FILE"},
		{"unknown scenario", []string{"gen", "-scenario", "nope", "-o", filepath.Join(dir, "x.pcap")}, "unknown scenario"},
		{"missing pcap", []string{"replay", "-pcap", filepath.Join(dir, "missing.pcap")}, "no such file"},
		{"bad pcap", []string{"replay", "-pcap", bad}, "pcap"},
		{"too many routes", []string{"replay", "-routes", "100000", "-duration", "1ms"}, "routes"},
		{"runs", []string{"replay", "-runs", "0"}, "-runs"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			err := run(tc.args, &out, &errb)
			if err == nil {
				t.Fatalf("no error; output:\n%s", out.String())
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}
