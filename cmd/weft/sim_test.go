package main

import (
	"flag"
	"io"
	"slices"
	"strings"
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
		// Issue 12 item 10: flags between the pod and the command were
		// taken for the command, and the sim's name stayed "weft".
		{"exec flag after pod", []string{"n1-p1", "--name", "r2", "--", "true"}, -1, []string{"n1-p1", "true"}, "r2", false},
		{"exec flag after pod, no dashes", []string{"n1-p1", "--name", "r2", "ip", "-br", "a"}, -1, []string{"n1-p1", "ip", "-br", "a"}, "r2", false},
		{"exec unknown flag after pod", []string{"n1-p1", "-c", "1", "ping"}, -1, nil, "weft", true},
		{"exec command after dashes only", []string{"n1-p1", "--name", "r2", "--"}, -1, nil, "r2", true},
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

// TestSimHelpListsEveryFlag is issue 12 item 10: `weft sim --help` must
// list every flag its subcommands take (it lacked --lease-ttl, --etcd,
// --weftd-args, --keep-on-failure, --port, ...).
func TestSimHelpListsEveryFlag(t *testing.T) {
	for _, args := range [][]string{{"sim", "--help"}, {"help", "sim"}} {
		code, out, errOut := runCLI(args...)
		if code != exitOK {
			t.Fatalf("%q: exit %d, stderr %q", args, code, errOut)
		}
		for name, sub := range simSubs {
			fs := flag.NewFlagSet(name, flag.ContinueOnError)
			var f simFlags
			f.register(fs)
			sub.setup(fs, &f)
			fs.VisitAll(func(fl *flag.Flag) {
				dash := "--"
				if len(fl.Name) == 1 {
					dash = "-"
				}
				if !strings.Contains(out, dash+fl.Name+" ") && !strings.Contains(out, dash+fl.Name+"\n") {
					t.Errorf("%q does not list %s%s (of sim %s)", args, dash, fl.Name, name)
				}
			})
		}
	}
}

// TestSimHelpExplainsKube: `weft sim --help` says what --registry kube
// runs and where its binaries come from.
func TestSimHelpExplainsKube(t *testing.T) {
	code, out, errOut := runCLI("sim", "--help")
	if code != exitOK {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	for _, want := range []string{"--registry file|etcd|kube", "kube-controller-manager --allocate-node-cidrs", "spec.podCIDR", "--kube-tools DIR", "apply/delete go to the API server"} {
		if !strings.Contains(out, want) {
			t.Errorf("weft sim --help does not mention %q", want)
		}
	}
}

// TestFindKubeTools: a given directory wins (made absolute); with
// $WEFT_TOOLS set the sim's own lookup is left to read it.
func TestFindKubeTools(t *testing.T) {
	t.Setenv("WEFT_TOOLS", "/somewhere/tools")
	if got := findKubeTools("/given"); got != "/given" {
		t.Errorf("findKubeTools(/given) = %q", got)
	}
	if got := findKubeTools(""); got != "" {
		t.Errorf("findKubeTools(\"\") with WEFT_TOOLS set = %q, want \"\" (KubeBinaries reads it)", got)
	}
}
