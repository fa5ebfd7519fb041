package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/weftnet/weft/api"
)

var attachCmd = &command{
	name:     "attach",
	summary:  "give a pod a network interface (what the CNI plugin does)",
	synopsis: "--pod-id ID --netns PATH [--ifname NAME] [--pod-namespace NS --pod-name NAME] [flags]",
	help: `Create the pod's interface: weftd allocates an address from the node's subnet,
creates a TAP device inside the pod's network namespace with that address, the
pod MTU and a default route via the gateway, and attaches it to the switch.
Attaching the same pod ID and interface again returns the existing interface.

Examples:
  weft attach --pod-id 3f2a9c --netns /var/run/netns/web-0
  weft attach --pod-id 3f2a9c --netns /proc/4242/ns/net --pod-namespace default --pod-name web-0
  weft attach --pod-id 3f2a9c --netns /var/run/netns/web-0 -o json | jq -r .address`,
	setup: func(fs *flag.FlagSet) func(context.Context, *cli) error {
		var req api.AttachRequest
		fs.StringVar(&req.PodID, "pod-id", "", "`ID` the pod (sandbox) ID; required")
		fs.StringVar(&req.Netns, "netns", "", "`PATH` the pod's network namespace, e.g. /var/run/netns/NAME or /proc/PID/ns/net; required")
		fs.StringVar(&req.IfName, "ifname", api.DefaultIfName, "`NAME` interface name inside the pod")
		fs.StringVar(&req.PodNamespace, "pod-namespace", "", "`NS` the pod's Kubernetes namespace, for display")
		fs.StringVar(&req.PodName, "pod-name", "", "`NAME` the pod's Kubernetes name, for display")
		return func(ctx context.Context, c *cli) error {
			if err := required([2]string{"pod-id", req.PodID}, [2]string{"netns", req.Netns}); err != nil {
				return err
			}
			resp, err := c.client().Attach(ctx, req)
			if err != nil {
				return err
			}
			return c.emit(resp, func(t *table) {
				t.kv("pod", resp.PodID)
				t.kv("interface", resp.IfName+" in "+resp.Netns)
				t.kv("tap", orDash(resp.TapName))
				t.kv("address", prefix(resp.Address))
				t.kv("gateway", addr(resp.Gateway))
				t.kv("mac", mac(resp.MAC))
				t.kv("mtu", fmt.Sprint(resp.MTU))
			})
		}
	},
}

// detachResult is `weft detach -o json`.
type detachResult struct {
	PodID    string `json:"pod_id"`
	IfName   string `json:"ifname"`
	Detached bool   `json:"detached"`
}

var detachCmd = &command{
	name:     "detach",
	summary:  "remove a pod's network interface and free its address",
	synopsis: "--pod-id ID [--ifname NAME] [flags]",
	help: `Remove a pod interface: weftd detaches it from the switch, deletes the TAP
device and frees the pod's address. A pod ID that has no such interface is an
error (exit status 1).

Examples:
  weft detach --pod-id 3f2a9c
  weft detach --pod-id 3f2a9c --ifname net1`,
	setup: func(fs *flag.FlagSet) func(context.Context, *cli) error {
		var req api.DetachRequest
		fs.StringVar(&req.PodID, "pod-id", "", "`ID` the pod (sandbox) ID; required")
		fs.StringVar(&req.IfName, "ifname", api.DefaultIfName, "`NAME` interface name inside the pod")
		return func(ctx context.Context, c *cli) error {
			if err := required([2]string{"pod-id", req.PodID}); err != nil {
				return err
			}
			if err := c.client().Detach(ctx, req); err != nil {
				return err
			}
			res := detachResult{PodID: req.PodID, IfName: req.IfName, Detached: true}
			return c.emit(res, func(t *table) {
				t.row(fmt.Sprintf("detached %s of pod %s", req.IfName, req.PodID))
			})
		}
	},
}
