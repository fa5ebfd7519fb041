package main

import (
	"flag"
	"io"
	"slices"
	"testing"
)

func TestSimParseInterspersed(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    int
		pos     []string
		simName string
		wantErr bool
	}{
		{"no positional", []string{"--name", "x"}, 0, nil, "x", false},
		{"flag after node", []string{"n1", "--name", "x"}, 1, []string{"n1"}, "x", false},
		{"flag before node", []string{"--name", "x", "n2"}, 1, []string{"n2"}, "x", false},
		{"missing node", []string{"--name", "x"}, 1, nil, "x", true},
		{"extra argument", []string{"n1", "n2"}, 1, nil, "weft", true},
		{"exec with dashes", []string{"--name", "x", "n1-p1", "--", "ping", "-c", "1", "10.0.0.1"}, -1, []string{"n1-p1", "ping", "-c", "1", "10.0.0.1"}, "x", false},
		{"exec keeps command flags", []string{"n1", "ip", "-br", "--name", "a"}, -1, []string{"n1", "ip", "-br", "--name", "a"}, "weft", false},
		{"exec without command", []string{"n1-p1", "--"}, -1, nil, "weft", true},
		{"exec without target", []string{}, -1, nil, "weft", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			var f simFlags
			f.register(fs)
			pos, err := parseInterspersed(fs, tc.args, tc.want)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, want error %v", err, tc.wantErr)
			}
			if err == nil && (!slices.Equal(pos, tc.pos) || f.name != tc.simName) {
				t.Errorf("positional %q, name %q; want %q, %q", pos, f.name, tc.pos, tc.simName)
			}
		})
	}
}
