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
	"net/url"
	"os"
	"strings"
	"syscall"
)

// ErrNotRunning matches the error a Client returns when nothing serves
// its socket.
var ErrNotRunning = errors.New("weftd is not running")

// NotRunningError says that weftd does not serve the client's socket.
type NotRunningError struct {
	Socket string
	Stale  bool // a socket file exists but nobody answers on it
}

func (e *NotRunningError) Error() string {
	why := "no socket at " + e.Socket
	if e.Stale {
		why = "nothing answers on " + e.Socket
	}
	return fmt.Sprintf("weftd is not running (%s): start it with `weftd --config ...` or check --socket", why)
}

// Unwrap makes errors.Is(err, ErrNotRunning) true.
func (e *NotRunningError) Unwrap() error { return ErrNotRunning }

// Client talks to weftd over its unix socket. It is safe for concurrent
// use. Every method returns either weftd's answer, a *RemoteError (matching
// ErrNotFound etc. with errors.Is), a *NotRunningError, or a transport
// error.
type Client struct {
	socket string
	hc     *http.Client
}

// NewClient returns a client for the API socket at socketPath. Nothing is
// dialled until the first call. Deadlines come from each call's context.
func NewClient(socketPath string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socketPath)
		},
		MaxIdleConns: 2,
	}
	return &Client{socket: socketPath, hc: &http.Client{Transport: tr}}
}

// Socket returns the socket path the client dials.
func (c *Client) Socket() string { return c.socket }

// Close drops idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// Status returns the node's identity and health.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var v Status
	return v, c.do(ctx, http.MethodGet, "/v1/status", nil, &v)
}

// Ports lists the attached pod ports.
func (c *Client) Ports(ctx context.Context) ([]Port, error) {
	var v []Port
	return v, c.do(ctx, http.MethodGet, "/v1/ports", nil, &v)
}

// Attach gives a pod an interface, or returns the one it has.
func (c *Client) Attach(ctx context.Context, req AttachRequest) (AttachResponse, error) {
	var v AttachResponse
	return v, c.do(ctx, http.MethodPost, "/v1/ports", req, &v)
}

// Detach removes a pod interface; IfName defaults to eth0.
func (c *Client) Detach(ctx context.Context, req DetachRequest) error {
	if req.PodID == "" {
		return BadRequest("pod_id", "required")
	}
	path := "/v1/ports/" + url.PathEscape(req.PodID)
	if req.IfName != "" {
		path += "?ifname=" + url.QueryEscape(req.IfName)
	}
	return c.do(ctx, http.MethodDelete, path, nil, nil)
}

// Peers lists the remote nodes in the peer table.
func (c *Client) Peers(ctx context.Context) ([]Peer, error) {
	var v []Peer
	return v, c.do(ctx, http.MethodGet, "/v1/peers", nil, &v)
}

// FDB lists the switch's learned MAC addresses.
func (c *Client) FDB(ctx context.Context) ([]FDBEntry, error) {
	var v []FDBEntry
	return v, c.do(ctx, http.MethodGet, "/v1/fdb", nil, &v)
}

// Routes lists the router's routes.
func (c *Client) Routes(ctx context.Context) ([]Route, error) {
	var v []Route
	return v, c.do(ctx, http.MethodGet, "/v1/routes", nil, &v)
}

// Neighbours lists the router's neighbour table.
func (c *Client) Neighbours(ctx context.Context) ([]Neighbour, error) {
	var v []Neighbour
	return v, c.do(ctx, http.MethodGet, "/v1/neigh", nil, &v)
}

// IPAM returns the node subnet's address use.
func (c *Client) IPAM(ctx context.Context) (IPAM, error) {
	var v IPAM
	return v, c.do(ctx, http.MethodGet, "/v1/ipam", nil, &v)
}

// Subnets lists the cluster's node subnets.
func (c *Client) Subnets(ctx context.Context) ([]Subnet, error) {
	var v []Subnet
	return v, c.do(ctx, http.MethodGet, "/v1/subnets", nil, &v)
}

// Counters returns the node's packet counters.
func (c *Client) Counters(ctx context.Context) (Counters, error) {
	var v Counters
	return v, c.do(ctx, http.MethodGet, "/v1/counters", nil, &v)
}

// Trace asks what the pipeline would do with a frame.
func (c *Client) Trace(ctx context.Context, req TraceRequest) (TraceResponse, error) {
	var v TraceResponse
	return v, c.do(ctx, http.MethodPost, "/v1/trace", req, &v)
}

var _ Service = (*Client)(nil)

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("%s %s: encode request: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://weftd"+path, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return c.transportError(method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read response: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		return remoteError(resp.StatusCode, b)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: decode response: %w", method, path, err)
	}
	return nil
}

func (c *Client) transportError(method, path string, err error) error {
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s %s: %w", method, path, err)
	case errors.Is(err, syscall.ENOENT), errors.Is(err, os.ErrNotExist):
		return &NotRunningError{Socket: c.socket}
	case errors.Is(err, syscall.ECONNREFUSED):
		return &NotRunningError{Socket: c.socket, Stale: true}
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Errorf("permission denied on %s: weftd's API socket is root-only; run as root", c.socket)
	}
	return fmt.Errorf("%s %s via %s: %w", method, path, c.socket, err)
}

// remoteError builds the error for a failed response, tolerating a body
// that is not an Error (a proxy, a crashed handler).
func remoteError(status int, body []byte) error {
	var e Error
	if json.Unmarshal(body, &e) != nil || e.Error == "" {
		msg := strings.TrimSpace(string(body))
		if msg == "" {
			msg = http.StatusText(status)
		}
		return &RemoteError{Status: status, Code: codeForStatus(status), Msg: fmt.Sprintf("weftd: %d %s", status, msg)}
	}
	if e.Code == "" {
		e.Code = codeForStatus(status)
	}
	return &RemoteError{Status: status, Code: e.Code, Field: e.Field, Msg: e.Error}
}

func codeForStatus(status int) string {
	for _, k := range kinds {
		if k.status == status {
			return k.code
		}
	}
	return CodeInternal
}
