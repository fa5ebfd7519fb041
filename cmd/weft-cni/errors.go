package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/weftnet/weft/api"
)

// notRunningMsg is what a person reads when weftd does not serve socket.
func notRunningMsg(socket string, stale bool) string {
	why := ""
	if stale {
		why = " (the socket file exists but nothing answers on it)"
	}
	return fmt.Sprintf("weftd is not running on %s%s: start it with `weftd` or `systemctl start weftd`"+
		" (on Kubernetes: check the weft pod on this node, `kubectl -n weft get pods -o wide`)", socket, why)
}

// weftdError turns an error of weftd's API into a CNI error with the code
// a runtime acts on: ErrTryAgainLater when weftd is down, starting or
// slow (the runtime retries), ErrInvalidNetNS when weftd could not use
// CNI_NETNS, ErrInternal with weftd's own one-line message otherwise. what
// says which request failed ("attach pod X eth0").
func weftdError(conf *NetConf, what string, err error) *types.Error {
	var nr *api.NotRunningError
	var re *api.RemoteError
	switch {
	case errors.As(err, &nr):
		return types.NewError(types.ErrTryAgainLater, notRunningMsg(conf.Socket, nr.Stale), "")
	case errors.Is(err, api.ErrNotReady):
		return types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("%s: weftd on %s is not ready yet (%v): try again shortly; `weft status` shows its state", what, conf.Socket, err), "")
	case errors.Is(err, context.DeadlineExceeded):
		return types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("%s: weftd on %s did not answer within %s: it may be overloaded or stuck; see its log", what, conf.Socket, conf.timeout), "")
	case errors.As(err, &re) && re.Field == "netns":
		return types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("%s: CNI_NETNS: %s", what, re.Msg), "")
	case errors.Is(err, api.ErrConflict) && strings.Contains(err.Error(), "host port taken"):
		// A hostPort another pod holds: the runtime must not retry the
		// same request; the person must pick another port.
		return types.NewError(types.ErrInternal, fmt.Sprintf("%s: %v: pick another hostPort, hostIP or protocol, or remove the pod holding it", what, err), "")
	case errors.Is(err, api.ErrExhausted):
		return types.NewError(types.ErrInternal,
			fmt.Sprintf("%s: %v: this node's pod subnet is full; delete unused pods or give nodes larger subnets (node_mask)", what, err), "")
	}
	return types.NewError(types.ErrInternal, fmt.Sprintf("%s: %v", what, err), "")
}
