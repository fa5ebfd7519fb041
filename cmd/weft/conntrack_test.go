package main

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftnet/weft/api"
)

type ctFake struct {
	fakeService
	mu      sync.Mutex
	queries []api.ConntrackQuery
	flushes []api.ConntrackQuery
}

var fakeFlows = []api.ConntrackFlow{
	{Proto: "TCP", State: "established", Replied: true, Service: "default/web:http",
		Orig:  api.ConntrackTuple{Src: netip.MustParseAddrPort("10.244.1.3:40000"), Dst: netip.MustParseAddrPort("10.96.0.10:80")},
		Reply: api.ConntrackTuple{Src: netip.MustParseAddrPort("10.244.2.7:8080"), Dst: netip.MustParseAddrPort("10.244.1.3:40000")},
		Idle:  api.Duration(2 * time.Second), Expires: api.Duration(6 * time.Hour)},
	{Proto: "UDP", State: "none", Service: "kube-system/dns:dns",
		Orig:    api.ConntrackTuple{Src: netip.MustParseAddrPort("10.244.1.3:5000"), Dst: netip.MustParseAddrPort("10.96.0.53:53")},
		Reply:   api.ConntrackTuple{Src: netip.MustParseAddrPort("10.244.2.8:53"), Dst: netip.MustParseAddrPort("10.244.1.3:5000")},
		Expires: api.Duration(30 * time.Second)},
}

func (f *ctFake) Conntrack(_ context.Context, q api.ConntrackQuery) ([]api.ConntrackFlow, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queries = append(f.queries, q)
	return fakeFlows, nil
}

func (f *ctFake) FlushConntrack(_ context.Context, q api.ConntrackQuery) (api.ConntrackFlushResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.flushes = append(f.flushes, q)
	return api.ConntrackFlushResult{Flushed: 2}, nil
}

func TestConntrackCommand(t *testing.T) {
	svc := &ctFake{}
	sock := serve(t, svc)
	code, out, errOut := runCLI("--socket", sock, "conntrack", "--ip", "10.96.0.10", "--port", "80")
	if code != exitOK || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	for _, want := range []string{"PROTO", "10.244.1.3:40000 > 10.96.0.10:80", "10.244.2.7:8080 > 10.244.1.3:40000", "established", "default/web:http", "unreplied"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if len(svc.queries) != 1 || svc.queries[0].IP != netip.MustParseAddr("10.96.0.10") || svc.queries[0].Port != 80 {
		t.Fatalf("query %+v", svc.queries)
	}
	code, out, _ = runCLI("--socket", sock, "conntrack", "-o", "json")
	var got []api.ConntrackFlow
	if code != exitOK || json.Unmarshal([]byte(out), &got) != nil || len(got) != 2 || got[0].Service != "default/web:http" {
		t.Fatalf("json: exit %d, %s", code, out)
	}
	code, out, _ = runCLI("--socket", sock, "conntrack", "flush", "--port", "53")
	if code != exitOK || !strings.Contains(out, "flushed") || !strings.Contains(out, "2") {
		t.Fatalf("flush: exit %d, %s", code, out)
	}
	if len(svc.flushes) != 1 || svc.flushes[0].Port != 53 {
		t.Fatalf("flushes %+v", svc.flushes)
	}
	for _, args := range [][]string{
		{"conntrack", "--ip", "banana"},
		{"conntrack", "--port", "70000"},
		{"conntrack", "flush", "extra"},
	} {
		if code, _, errOut := runCLI(append([]string{"--socket", sock}, args...)...); code != exitUsage {
			t.Errorf("%v: exit %d (%s), want usage error", args, code, errOut)
		}
	}
	code, out, _ = runCLI("conntrack", "--help")
	if code != exitOK || !strings.Contains(out, "weft conntrack flush") || !strings.Contains(out, "--ip ADDR") {
		t.Fatalf("help: %s", out)
	}
}

// A weftd without connection tracking says so (501), exit 1.
func TestConntrackNotImplemented(t *testing.T) {
	sock := serve(t, &fakeService{})
	if code, _, errOut := runCLI("--socket", sock, "conntrack"); code != exitError || !strings.Contains(errOut, "not implemented") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
}
