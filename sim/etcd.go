package sim

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/weftnet/weft/netdev"
)

// EtcdProc is an etcd member the sim runs itself: a process inside the
// underlay namespace that listens on the underlay bridge's address, so the
// nodes reach it over the underlay as they would a real cluster's etcd.
type EtcdProc struct {
	Bin      string     `json:"bin"`
	PID      int        `json:"pid"`
	Addr     netip.Addr `json:"addr"` // on br0
	Endpoint string     `json:"endpoint"`
	DataDir  string     `json:"data_dir"`
	Log      string     `json:"log"`
}

// etcd's default ports; nothing else listens in the underlay namespace.
const (
	etcdClientPort = 2379
	etcdPeerPort   = 2380
)

// startEtcd gives br0 the underlay's first address and starts etcd there.
func (c *Cluster) startEtcd(ctx context.Context) error {
	e := c.Etcd
	a := c.UnderlayNet.Addr().As4()
	a[3] = 1
	e.Addr = netip.AddrFrom4(a)
	e.Endpoint = "http://" + netip.AddrPortFrom(e.Addr, etcdClientPort).String()
	e.DataDir = filepath.Join(c.Dir, "etcd")
	e.Log = filepath.Join(c.Dir, "etcd.log")
	c.EtcdEndpoints = []string{e.Endpoint}
	if err := netdev.AddAddr(netdev.NetnsPath(c.underlayNS()), "br0", netip.PrefixFrom(e.Addr, c.UnderlayNet.Bits())); err != nil {
		return fmt.Errorf("etcd: address on br0: %w", err)
	}
	logf, err := os.OpenFile(e.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("etcd log: %w", err)
	}
	defer logf.Close()
	peer := "http://127.0.0.1:" + strconv.Itoa(etcdPeerPort)
	const member = "weft-sim"
	args := []string{"--net=" + netdev.NetnsPath(c.underlayNS()), e.Bin,
		"--name", member,
		"--data-dir", e.DataDir,
		"--listen-client-urls", e.Endpoint + ",http://127.0.0.1:" + strconv.Itoa(etcdClientPort),
		"--advertise-client-urls", e.Endpoint,
		"--listen-peer-urls", peer,
		"--initial-advertise-peer-urls", peer,
		"--initial-cluster", member + "=" + peer,
		"--initial-cluster-state", "new",
		"--logger", "zap",
		"--log-level", "warn",
	}
	cmd := exec.Command("nsenter", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	pid, err := c.startDaemon(cmd)
	if err != nil {
		return fmt.Errorf("etcd: start %s: %w", e.Bin, err)
	}
	e.PID = pid
	if err := c.save(); err != nil {
		return err
	}
	c.logf("etcd: pid %d in %s, listening on %s, data %s", e.PID, c.underlayNS(), e.Endpoint, e.DataDir)
	return c.waitEtcd(ctx, 20*time.Second)
}

// waitEtcd polls etcd's /health from inside the underlay namespace.
func (c *Cluster) waitEtcd(ctx context.Context, timeout time.Duration) error {
	e := c.Etcd
	hc := &http.Client{
		Timeout: 500 * time.Millisecond,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return DialIn(ctx, c.underlayNS(), network, addr)
			},
			DisableKeepAlives: true,
		},
	}
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if !pidAlive(e.PID) {
			return fmt.Errorf("etcd (pid %d) exited; see %s:\n%s", e.PID, e.Log, tail(e.Log, 10))
		}
		resp, err := hc.Get(e.Endpoint + "/health")
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && bytes.Contains(body, []byte(`"true"`)) {
				return nil
			}
			err = fmt.Errorf("health %s: %s", resp.Status, strings.TrimSpace(string(body)))
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("etcd not healthy after %s: %v; see %s", timeout, last, e.Log)
}
