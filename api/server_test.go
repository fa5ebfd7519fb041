package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func shortTempDir(t *testing.T) (string, error) {
	dir, err := os.MkdirTemp("", "weftapi")
	if err != nil {
		return "", err
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir, nil
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestRoundTrip(t *testing.T) {
	svc := &fakeService{}
	c := NewClient(startServer(t, svc))
	defer c.Close()
	ctx := testCtx(t)

	tests := []struct {
		name string
		call func() (any, error)
		want any
	}{
		{"status", func() (any, error) { return c.Status(ctx) }, wantStatus},
		{"ports", func() (any, error) { return c.Ports(ctx) }, wantPorts},
		{"attach", func() (any, error) {
			return c.Attach(ctx, AttachRequest{PodID: "c0ffee", Netns: "/var/run/netns/p1", PodNamespace: "default", PodName: "web-0"})
		}, wantAttach},
		{"detach", func() (any, error) { return nil, c.Detach(ctx, DetachRequest{PodID: "c0ffee", IfName: "net1"}) }, nil},
		{"peers", func() (any, error) { return c.Peers(ctx) }, wantPeers},
		{"fdb", func() (any, error) { return c.FDB(ctx) }, wantFDB},
		{"routes", func() (any, error) { return c.Routes(ctx) }, wantRoutes},
		{"neigh", func() (any, error) { return c.Neighbours(ctx) }, wantNeigh},
		{"ipam", func() (any, error) { return c.IPAM(ctx) }, wantIPAM},
		{"subnets", func() (any, error) { return c.Subnets(ctx) }, wantSubnets},
		{"counters", func() (any, error) { return c.Counters(ctx) }, wantCounters},
		{"trace", func() (any, error) {
			return c.Trace(ctx, TraceRequest{In: "c0ffee", Dst: netip.MustParseAddr("10.244.2.3"), Proto: ProtoUDP, DPort: 53})
		}, wantTrace},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.call()
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}

	// The server filled defaults before the Service saw the requests.
	if len(svc.attached) != 1 || svc.attached[0].IfName != DefaultIfName || svc.attached[0].PodName != "web-0" {
		t.Errorf("service got attach requests %+v, want one for web-0 with ifname %s", svc.attached, DefaultIfName)
	}
	if len(svc.detached) != 1 || svc.detached[0] != (DetachRequest{PodID: "c0ffee", IfName: "net1"}) {
		t.Errorf("service got detach requests %+v", svc.detached)
	}
	if len(svc.traced) != 1 || svc.traced[0].TTL != 64 || svc.traced[0].DPort != 53 {
		t.Errorf("service got trace requests %+v, want one with dport 53 and default ttl 64", svc.traced)
	}
}

// emptyService returns nil slices and maps everywhere.
type emptyService struct{ *fakeService }

func (emptyService) Ports(context.Context) ([]Port, error)      { return nil, nil }
func (emptyService) IPAM(context.Context) (IPAM, error)         { return IPAM{Subnet: subnetA}, nil }
func (emptyService) Counters(context.Context) (Counters, error) { return nil, nil }

func TestEmptyCollectionsAreNotNull(t *testing.T) {
	path := startServer(t, emptyService{&fakeService{}})
	hc := rawClient(path)
	tests := []struct {
		path string
		want string
	}{
		{"/v1/ports", "[]"},
		{"/v1/counters", "{}"},
		{"/v1/ipam", `"allocations": []`},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			status, body := rawDo(t, hc, http.MethodGet, tc.path, "")
			if status != http.StatusOK || !strings.Contains(body, tc.want) {
				t.Errorf("GET %s = %d %s, want 200 containing %s", tc.path, status, body, tc.want)
			}
		})
	}
}

func TestSocketFile(t *testing.T) {
	dir, err := shortTempDir(t)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "a", "b", "weftd.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode = %v, want a socket with 0600", fi.Mode())
	}
	di, err := os.Stat(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o755 {
		t.Errorf("parent dir mode = %v, want 0755", di.Mode().Perm())
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("socket dir holds %d entries, want only the socket (temporary name left behind?)", len(entries))
	}
	ln.Close()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after Close, Lstat(socket) = %v, want not exist", err)
	}
}

func TestStaleSocketIsReplaced(t *testing.T) {
	dir, err := shortTempDir(t)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "weftd.sock")
	// A weftd that died leaves its socket file with nobody listening.
	dead, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	dead.SetUnlinkOnClose(false)
	dead.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("stale socket not left behind: %v", err)
	}

	svc := &fakeService{}
	srv := NewServer(svc, nil)
	ln, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	go srv.Serve(ln)
	defer srv.Shutdown(context.Background())
	if _, err := NewClient(path).Status(testCtx(t)); err != nil {
		t.Errorf("Status via the new socket: %v", err)
	}
}

func TestSecondServerRefuses(t *testing.T) {
	path := startServer(t, &fakeService{})
	ln, err := Listen(path)
	if err == nil {
		ln.Close()
		t.Fatal("second Listen succeeded, want an error")
	}
	if !errors.Is(err, ErrAlreadyRunning) || !strings.Contains(err.Error(), "weftd already running on "+path) {
		t.Errorf("err = %q, want ErrAlreadyRunning naming %s", err, path)
	}
	// The first server must be untouched.
	if _, err := NewClient(path).Status(testCtx(t)); err != nil {
		t.Errorf("first server after the refused second: %v", err)
	}
}

func TestListenRefusesNonSocket(t *testing.T) {
	dir, err := shortTempDir(t)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "weftd.sock")
	if err := os.WriteFile(path, []byte("not a socket"), 0o600); err != nil {
		t.Fatal(err)
	}
	if ln, err := Listen(path); err == nil {
		ln.Close()
		t.Fatal("Listen over a regular file succeeded")
	} else if !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("err = %q, want it to say 'not a socket'", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "not a socket" {
		t.Error("Listen clobbered a regular file")
	}
}

func TestListenRefusesLongPath(t *testing.T) {
	path := "/tmp/" + strings.Repeat("x", maxSocketPath) + "/weftd.sock"
	if ln, err := Listen(path); err == nil {
		ln.Close()
		t.Fatal("Listen with an over-long path succeeded")
	} else if !strings.Contains(err.Error(), "longer than") {
		t.Errorf("err = %q, want it to name the length limit", err)
	}
}

func TestShutdownRemovesSocket(t *testing.T) {
	dir, err := shortTempDir(t)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "weftd.sock")
	srv := NewServer(&fakeService{}, nil)
	done := make(chan error, 1)
	go func() { done <- srv.ListenAndServe(path) }()
	c := NewClient(path)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := c.Status(testCtx(t)); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("server never answered: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.Close()
	if err := srv.Shutdown(testCtx(t)); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-done; err != nil {
		t.Errorf("ListenAndServe after Shutdown = %v, want nil", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket still there after Shutdown: %v", err)
	}
}

func TestErrorMapping(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		wantStatus int
		wantCode   string
		wantIs     error
	}{
		{"not found", fmt.Errorf("pod abc: %w", ErrNotFound), http.StatusNotFound, CodeNotFound, ErrNotFound},
		{"conflict", fmt.Errorf("netns in use: %w", ErrConflict), http.StatusConflict, CodeConflict, ErrConflict},
		{"exhausted", fmt.Errorf("subnet 10.244.1.0/24: %w", ErrExhausted), http.StatusConflict, CodeExhausted, ErrExhausted},
		{"not ready", fmt.Errorf("registry: %w", ErrNotReady), http.StatusServiceUnavailable, CodeNotReady, ErrNotReady},
		{"not implemented", ErrNotImplemented, http.StatusNotImplemented, CodeNotImplemented, ErrNotImplemented},
		{"forbidden", fmt.Errorf("apply Service sim/x: %w", ErrForbidden), http.StatusForbidden, CodeForbidden, ErrForbidden},
		{"field", BadRequest("in", "no such port"), http.StatusBadRequest, CodeBadRequest, ErrBadRequest},
		{"timeout", fmt.Errorf("create tap: %w", context.DeadlineExceeded), http.StatusGatewayTimeout, CodeTimeout, nil},
		{"other", errors.New("disk on fire"), http.StatusInternalServerError, CodeInternal, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := NewClient(startServer(t, &fakeService{err: tc.err}))
			defer c.Close()
			_, err := c.Ports(testCtx(t))
			var re *RemoteError
			if !errors.As(err, &re) {
				t.Fatalf("err = %T %v, want *RemoteError", err, err)
			}
			if re.Status != tc.wantStatus || re.Code != tc.wantCode || re.Msg != tc.err.Error() {
				t.Errorf("got %d %s %q, want %d %s %q", re.Status, re.Code, re.Msg, tc.wantStatus, tc.wantCode, tc.err.Error())
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("errors.Is(%v, %v) = false", err, tc.wantIs)
			}
			if tc.wantIs != ErrNotFound && errors.Is(err, ErrNotFound) {
				t.Errorf("errors.Is(%v, ErrNotFound) = true", err)
			}
		})
	}
}

func rawClient(path string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
}

func rawDo(t *testing.T, hc *http.Client, method, path, body string) (int, string) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(testCtx(t), method, "http://weftd"+path, r)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestBadRequests(t *testing.T) {
	svc := &fakeService{}
	hc := rawClient(startServer(t, svc))
	tests := []struct {
		name       string
		method     string
		path       string
		body       string
		wantStatus int
		wantField  string
		wantText   string
	}{
		{"attach without pod_id", "POST", "/v1/ports", `{"netns":"/run/netns/x"}`, 400, "pod_id", "required"},
		{"attach without netns", "POST", "/v1/ports", `{"pod_id":"p"}`, 400, "netns", "required"},
		{"attach bad ifname", "POST", "/v1/ports", `{"pod_id":"p","netns":"/n","ifname":"a/b"}`, 400, "ifname", "not a valid interface name"},
		{"attach slash in pod_id", "POST", "/v1/ports", `{"pod_id":"../x","netns":"/n"}`, 400, "pod_id", "contains"},
		{"attach newline in pod_id", "POST", "/v1/ports", `{"pod_id":"a\nb","netns":"/n"}`, 400, "pod_id", "control characters"},
		{"attach relative netns", "POST", "/v1/ports", `{"pod_id":"p","netns":"../../proc/1/ns/net"}`, 400, "netns", "clean absolute"},
		{"attach unclean netns", "POST", "/v1/ports", `{"pod_id":"p","netns":"/run/netns/../x"}`, 400, "netns", "clean absolute"},
		{"unknown field", "POST", "/v1/ports", `{"pod_id":"p","netns":"/n","ip":"1.2.3.4"}`, 400, "ip", "unknown field"},
		{"wrong type", "POST", "/v1/ports", `{"pod_id":5,"netns":"/n"}`, 400, "pod_id", "want string"},
		{"empty body", "POST", "/v1/ports", ``, 400, "body", "empty"},
		{"bad json", "POST", "/v1/ports", `{"pod_id":`, 400, "body", ""},
		{"two values", "POST", "/v1/ports", `{"pod_id":"p","netns":"/n"} {}`, 400, "body", "more than one"},
		{"trace without in", "POST", "/v1/trace", `{"dst":"10.0.0.1"}`, 400, "in", "required"},
		{"trace bad address", "POST", "/v1/trace", `{"in":"p","dst":"10.0.0.300"}`, 400, "body", "10.0.0.300"},
		{"trace bad proto", "POST", "/v1/trace", `{"in":"p","dst":"10.0.0.1","proto":"sctp"}`, 400, "proto", "sctp"},
		{"trace tcp without dport", "POST", "/v1/trace", `{"in":"p","dst":"10.0.0.1","proto":"tcp"}`, 400, "dport", "required"},
		{"detach bad ifname", "DELETE", "/v1/ports/p?ifname=a:b", ``, 400, "ifname", "not a valid"},
		{"unknown path", "GET", "/v1/nope", ``, 404, "", "no endpoint GET /v1/nope"},
		{"wrong method", "PUT", "/v1/status", ``, 405, "", "not allowed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, body := rawDo(t, hc, tc.method, tc.path, tc.body)
			var e Error
			if err := json.Unmarshal([]byte(body), &e); err != nil {
				t.Fatalf("body %q is not an Error: %v", body, err)
			}
			if status != tc.wantStatus || e.Field != tc.wantField || !strings.Contains(e.Error, tc.wantText) || e.Code == "" {
				t.Errorf("got %d %+v, want %d field %q containing %q", status, e, tc.wantStatus, tc.wantField, tc.wantText)
			}
		})
	}
	if len(svc.attached)+len(svc.detached)+len(svc.traced) != 0 {
		t.Errorf("bad requests reached the service: %+v %+v %+v", svc.attached, svc.detached, svc.traced)
	}
}

func TestPanicIs500(t *testing.T) {
	c := NewClient(startServer(t, &fakeService{panicMsg: "bug in node"}))
	defer c.Close()
	_, err := c.Status(testCtx(t))
	var re *RemoteError
	if !errors.As(err, &re) || re.Status != http.StatusInternalServerError || !strings.Contains(re.Msg, "bug in node") {
		t.Errorf("err = %v, want a 500 naming the panic", err)
	}
}

func TestClientNotRunning(t *testing.T) {
	dir, err := shortTempDir(t)
	if err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "weftd.sock")
	stale := filepath.Join(dir, "stale.sock")
	dead, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	dead.SetUnlinkOnClose(false)
	dead.Close()

	tests := []struct {
		name, socket, want string
	}{
		{"no socket", missing, "weftd is not running (no socket at " + missing + "): start it with `weftd --config ...` or check --socket"},
		{"stale socket", stale, "weftd is not running (nothing answers on " + stale + "): start it with `weftd --config ...` or check --socket"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewClient(tc.socket).Status(testCtx(t))
			if !errors.Is(err, ErrNotRunning) || err.Error() != tc.want {
				t.Errorf("err = %q\nwant  %q (matching ErrNotRunning)", err, tc.want)
			}
		})
	}
}

func TestClientNonJSONError(t *testing.T) {
	err := remoteError(http.StatusBadGateway, []byte("upstream broke\n"))
	var re *RemoteError
	if !errors.As(err, &re) || re.Status != http.StatusBadGateway || re.Msg != "weftd: 502 upstream broke" {
		t.Errorf("remoteError = %#v", err)
	}
	err = remoteError(http.StatusNotFound, nil)
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("remoteError(404, empty) = %v, want it to match ErrNotFound", err)
	}
}

func TestWriteJSONIsIndented(t *testing.T) {
	hc := rawClient(startServer(t, &fakeService{}))
	_, body := rawDo(t, hc, "GET", "/v1/status", "")
	var out bytes.Buffer
	if err := json.Indent(&out, []byte(body), "", "  "); err != nil {
		t.Fatal(err)
	}
	if out.String() != body {
		t.Errorf("response is not indented JSON:\n%s", body)
	}
}
