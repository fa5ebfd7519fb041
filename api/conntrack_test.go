package api

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ctService is the fake node with connection tracking.
type ctService struct {
	fakeService
	mu      sync.Mutex
	queries []ConntrackQuery
	flushes []ConntrackQuery
}

var wantFlows = []ConntrackFlow{{
	Proto: "TCP", State: "established", Replied: true, Service: "default/web:http",
	Orig:  ConntrackTuple{Src: netip.MustParseAddrPort("10.244.1.3:40000"), Dst: netip.MustParseAddrPort("10.96.0.10:80")},
	Reply: ConntrackTuple{Src: netip.MustParseAddrPort("10.244.2.7:8080"), Dst: netip.MustParseAddrPort("10.244.1.3:40000")},
	Idle:  Duration(time.Second), Expires: Duration(6 * time.Hour),
}}

func (f *ctService) Conntrack(_ context.Context, q ConntrackQuery) ([]ConntrackFlow, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queries = append(f.queries, q)
	return wantFlows, nil
}

func (f *ctService) FlushConntrack(_ context.Context, q ConntrackQuery) (ConntrackFlushResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.flushes = append(f.flushes, q)
	return ConntrackFlushResult{Flushed: 3}, nil
}

func TestConntrackRoundTrip(t *testing.T) {
	svc := &ctService{}
	c := NewClient(startServer(t, svc))
	defer c.Close()
	ctx := testCtx(t)
	flows, err := c.Conntrack(ctx, ConntrackQuery{IP: netip.MustParseAddr("10.96.0.10"), Port: 80})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(flows, wantFlows) {
		t.Fatalf("flows %+v", flows)
	}
	res, err := c.FlushConntrack(ctx, ConntrackQuery{Port: 53})
	if err != nil || res.Flushed != 3 {
		t.Fatalf("flush: %+v, %v", res, err)
	}
	want := []ConntrackQuery{{IP: netip.MustParseAddr("10.96.0.10"), Port: 80, Limit: MaxConntrackList}}
	if !reflect.DeepEqual(svc.queries, want) {
		t.Fatalf("queries %+v", svc.queries)
	}
	if len(svc.flushes) != 1 || svc.flushes[0].Port != 53 || svc.flushes[0].IP.IsValid() {
		t.Fatalf("flushes %+v", svc.flushes)
	}
}

func TestConntrackBadQueries(t *testing.T) {
	svc := &ctService{}
	sock := startServer(t, svc)
	c := NewClient(sock)
	defer c.Close()
	ctx := testCtx(t)
	for _, q := range []ConntrackQuery{
		{IP: netip.MustParseAddr("fd00::1")},
		{Limit: -1},
		{Limit: MaxConntrackList + 1},
	} {
		if _, err := c.Conntrack(ctx, q); !errors.Is(err, ErrBadRequest) {
			t.Errorf("query %+v: %v, want a bad request", q, err)
		}
	}
	for _, raw := range []string{"ip=banana", "port=0", "port=70000", "limit=x"} {
		if err := c.do(ctx, http.MethodGet, "/v1/conntrack?"+raw, nil, new([]ConntrackFlow)); !errors.Is(err, ErrBadRequest) {
			t.Errorf("%s: %v, want a bad request", raw, err)
		}
	}
	if len(svc.queries) != 0 {
		t.Fatalf("bad queries reached the node: %+v", svc.queries)
	}
}

// A node without connection tracking answers 501.
func TestConntrackNotImplemented(t *testing.T) {
	c := NewClient(startServer(t, &fakeService{}))
	defer c.Close()
	if _, err := c.Conntrack(testCtx(t), ConntrackQuery{}); !errors.Is(err, ErrNotImplemented) {
		t.Fatalf("%v, want not implemented", err)
	}
}

func TestConntrackMetrics(t *testing.T) {
	snap := func() Snapshot {
		return Snapshot{
			Conntrack:       ConntrackCounters{Entries: 7, Max: 262144, Inserts: 9, Full: 2, Expired: 1, Flushed: 1},
			ServiceNewFlows: map[string]uint64{"default/web:http": 9},
		}
	}
	reg := NewRegistry(snapshotFunc(snap))
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		"weft_conntrack_entries 7", "weft_conntrack_max 262144", "weft_conntrack_inserts_total 9",
		"weft_conntrack_full_drops_total 2", `weft_conntrack_removed_total{why="expired"} 1`,
		`weft_service_new_flows_total{service="default/web:http"} 9`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
