package sim

import (
	"context"
	"sync"
	"time"

	"github.com/weftnet/weft/api"
)

// NodeHealth is what a node's process and API say about it.
type NodeHealth struct {
	Node    *Node       `json:"node"`
	Running bool        `json:"running"` // its weftd process is alive
	Status  *api.Status `json:"status,omitempty"`
	Error   string      `json:"error,omitempty"` // why the API did not answer
}

// Health asks every node's weftd for its status, each bounded by timeout.
func (c *Cluster) Health(ctx context.Context, timeout time.Duration) []NodeHealth {
	out := make([]NodeHealth, len(c.Nodes))
	var wg sync.WaitGroup
	for i, n := range c.Nodes {
		out[i] = NodeHealth{Node: n, Running: pidAlive(n.PID)}
		wg.Go(func() {
			qctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			cl := api.NewClient(n.Socket)
			defer cl.Close()
			st, err := cl.Status(qctx)
			if err != nil {
				out[i].Error = err.Error()
				return
			}
			out[i].Status = &st
		})
	}
	wg.Wait()
	return out
}

// EtcdRunning reports whether the sim's own etcd process is alive.
func (c *Cluster) EtcdRunning() bool {
	return c.Etcd != nil && pidAlive(c.Etcd.PID) && c.ownsProc(c.Etcd.PID)
}
