package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/netdev"
)

// stderr is where weft-cni says what it did that the runtime's result does
// not show (a release recorded for later, a failed clean-up). Runtimes
// pass a plugin's stderr to their own log.
var stderr io.Writer = os.Stderr

func warnf(format string, args ...any) {
	fmt.Fprintf(stderr, "weft-cni: "+format+"\n", args...)
}

// session is what every verb starts with: the config, a client for weftd
// and a deadline for talking to it.
type session struct {
	conf *NetConf
	cl   *api.Client
	ctx  context.Context
	done func()
}

func newSession(stdin []byte) (*session, error) {
	conf, err := loadConf(stdin)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), conf.timeout)
	cl := api.NewClient(conf.Socket)
	return &session{conf: conf, cl: cl, ctx: ctx, done: func() { cancel(); cl.Close() }}, nil
}

// cmdAdd asks weftd to attach the container's interface and prints the
// result. weftd's attach is idempotent per (container ID, ifname), so a
// repeated ADD prints the same result.
func cmdAdd(args *skel.CmdArgs) error {
	s, err := newSession(args.StdinData)
	if err != nil {
		return err
	}
	defer s.done()
	what := fmt.Sprintf("attach %s %s", args.ContainerID, args.IfName)
	// A DEL recorded while weftd was down came before this ADD: apply it
	// first, or weftd would hand back the stale attachment.
	if err := s.applyPendingFor(args.ContainerID, args.IfName); err != nil {
		return weftdError(s.conf, what, err)
	}
	pod := parseArgs(args.Args)
	mappings, cerr := s.conf.apiPortMappings()
	if cerr != nil {
		return cerr
	}
	resp, err := s.cl.Attach(s.ctx, api.AttachRequest{
		PodID: args.ContainerID, Netns: args.Netns, IfName: args.IfName,
		PodNamespace: pod.Namespace, PodName: pod.Name, Owner: api.OwnerCNI,
		PodMeta:      api.PodMeta{PodUID: pod.UID},
		PortMappings: mappings,
	})
	if err != nil {
		return weftdError(s.conf, what, err)
	}
	result, err := addResult(s.conf, args.Netns, resp)
	if err != nil {
		return types.NewError(types.ErrInternal, fmt.Sprintf("%s: build result: %v", what, err), "")
	}
	return types.PrintResult(result, s.conf.CNIVersion)
}

// applyPendingFor applies the pending release of one attachment, if any.
func (s *session) applyPendingFor(podID, ifname string) error {
	if _, err := os.Stat(pendingFile(s.conf.PendingDir, podID, ifname)); err != nil {
		return nil
	}
	err := s.cl.Detach(s.ctx, api.DetachRequest{PodID: podID, IfName: ifname})
	if err != nil && !errors.Is(err, api.ErrNotFound) {
		return err
	}
	return removePending(s.conf.PendingDir, podID, ifname)
}

// addResult is the CNI result of an attach: the pod interface, its address
// with the gateway, and the default route via the gateway. A prevResult
// (weft-cni chained after another plugin) is kept and extended.
func addResult(conf *NetConf, netnsPath string, resp api.AttachResponse) (*current.Result, error) {
	r := &current.Result{CNIVersion: current.ImplementedSpecVersion}
	if conf.PrevResult != nil {
		prev, err := current.NewResultFromResult(conf.PrevResult)
		if err != nil {
			return nil, fmt.Errorf("convert prevResult: %w", err)
		}
		r = prev
	}
	if !resp.Address.IsValid() || !resp.Gateway.IsValid() {
		return nil, fmt.Errorf("weftd answered without an address or gateway (%+v)", resp)
	}
	r.Interfaces = append(r.Interfaces, &current.Interface{
		Name: resp.IfName, Mac: resp.MAC.String(), Mtu: resp.MTU, Sandbox: netnsPath,
	})
	idx := len(r.Interfaces) - 1
	gw := net.IP(resp.Gateway.AsSlice())
	r.IPs = append(r.IPs, &current.IPConfig{
		Interface: current.Int(idx), Address: *prefixIPNet(resp.Address), Gateway: gw,
	})
	bits := resp.Address.Addr().BitLen()
	def := netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	if bits == 32 {
		def = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	}
	r.Routes = append(r.Routes, &types.Route{Dst: *prefixIPNet(def), GW: gw})
	return r, nil
}

func prefixIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// cmdDel asks weftd to detach the interface. It succeeds when there is
// nothing to detach, when the namespace is gone or not given, and when
// weftd is down: then the release is recorded in pendingDir for weftd to
// apply when it starts, and the TAP is removed from the pod namespace so
// the pod loses the interface now.
func cmdDel(args *skel.CmdArgs) error {
	s, err := newSession(args.StdinData)
	if err != nil {
		return err
	}
	defer s.done()
	err = s.cl.Detach(s.ctx, api.DetachRequest{PodID: args.ContainerID, IfName: args.IfName})
	switch {
	case err == nil, errors.Is(err, api.ErrNotFound):
		if err := removePending(s.conf.PendingDir, args.ContainerID, args.IfName); err != nil {
			warnf("%v", err)
		}
		// weftd is reachable: a good moment to apply releases left while it
		// was down, in case weftd itself has not.
		if n, err := drainPending(s.ctx, s.cl, s.conf.PendingDir); err != nil {
			warnf("applied %d pending releases; others failed: %v", n, err)
		}
		return nil
	case errors.Is(err, api.ErrNotRunning):
		return delWithoutWeftd(s.conf, args, err)
	}
	return weftdError(s.conf, fmt.Sprintf("detach %s %s", args.ContainerID, args.IfName), err)
}

func delWithoutWeftd(conf *NetConf, args *skel.CmdArgs, cause error) error {
	rel := PendingRelease{
		Version: pendingVersion, PodID: args.ContainerID, IfName: args.IfName, Netns: args.Netns,
		RequestedAt: time.Now().UTC(), Reason: "weftd was not running on " + conf.Socket + ": " + cause.Error(),
	}
	if err := writePending(conf.PendingDir, rel); err != nil {
		// Without the record the address would stay taken until a GC; a
		// failed DEL is retried by the runtime.
		return types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("%s; and the release could not be recorded for later: %v", notRunningMsg(conf.Socket, false), err), "")
	}
	if args.Netns != "" {
		// weftd, when it restarts, finds the device gone and frees the port
		// even if it never reads the pending record.
		if err := netdev.DeleteTap(args.IfName, args.Netns); err != nil {
			warnf("remove %s in %s: %v", args.IfName, args.Netns, err)
		}
	}
	warnf("weftd is not running on %s; recorded the release of %s %s in %s for when it starts",
		conf.Socket, args.ContainerID, args.IfName, pendingFile(conf.PendingDir, args.ContainerID, args.IfName))
	return nil
}

// cmdCheck verifies that the interface of prevResult is in the namespace
// as it was set up (link, MAC, MTU, up, address, routes via the gateway)
// and that weftd still has the port with the same address and MAC.
func cmdCheck(args *skel.CmdArgs) error {
	s, err := newSession(args.StdinData)
	if err != nil {
		return err
	}
	defer s.done()
	if s.conf.PrevResult == nil {
		return invalidConf("prevResult", "required for CHECK (the result of the ADD being checked)")
	}
	prev, err := current.NewResultFromResult(s.conf.PrevResult)
	if err != nil {
		return invalidConf("prevResult", err.Error())
	}
	want, err := expectedFrom(prev, args.IfName)
	if err != nil {
		return invalidConf("prevResult", err.Error())
	}
	ports, err := s.cl.Ports(s.ctx)
	if err != nil {
		return weftdError(s.conf, "list ports", err)
	}
	diffs, found := comparePort(ports, args.ContainerID, args.IfName, want)
	if found {
		mappings, cerr := s.conf.apiPortMappings()
		if cerr != nil {
			return cerr
		}
		for _, p := range ports {
			if p.PodID == args.ContainerID && p.IfName == args.IfName {
				diffs = append(diffs, comparePortMappings(p.PortMappings, mappings)...)
			}
		}
	}
	code := uint(types.ErrInternal)
	if !found {
		code = types.ErrUnknownContainer
	}
	nd, err := verifyNetns(args.Netns, args.IfName, want)
	if err != nil {
		return types.NewError(types.ErrInternal, fmt.Sprintf("CHECK %s in %s: %v", args.IfName, args.Netns, err), "")
	}
	diffs = append(diffs, nd...)
	if len(diffs) > 0 {
		return types.NewError(code, fmt.Sprintf("CHECK %s %s in %s: %s", args.ContainerID, args.IfName, args.Netns, strings.Join(diffs, "; ")), "")
	}
	return nil
}

// cmdGC detaches every port weftd holds that is not among the runtime's
// valid attachments, and applies pending releases. It goes on after an
// error and reports all of them.
func cmdGC(args *skel.CmdArgs) error {
	s, err := newSession(args.StdinData)
	if err != nil {
		return err
	}
	defer s.done()
	valid := make(map[types.GCAttachment]bool, len(s.conf.ValidAttachments))
	for _, a := range s.conf.ValidAttachments {
		valid[a] = true
	}
	ports, err := s.cl.Ports(s.ctx)
	if err != nil {
		return weftdError(s.conf, "GC: list ports", err)
	}
	var errs []error
	for _, p := range ports {
		// Ports attached by hand (weft attach) or by another tool are not
		// the runtime's to collect.
		if p.Owner != api.OwnerCNI || valid[types.GCAttachment{ContainerID: p.PodID, IfName: p.IfName}] {
			continue
		}
		err := s.cl.Detach(s.ctx, api.DetachRequest{PodID: p.PodID, IfName: p.IfName})
		if err != nil && !errors.Is(err, api.ErrNotFound) {
			errs = append(errs, fmt.Errorf("detach %s %s (%s): %w", p.PodID, p.IfName, p.IP, err))
			continue
		}
		warnf("GC: detached %s %s (%s), not among the runtime's valid attachments", p.PodID, p.IfName, p.IP)
	}
	if _, err := drainPending(s.ctx, s.cl, s.conf.PendingDir); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return types.NewError(types.ErrInternal, "GC: "+errors.Join(errs...).Error(), "")
	}
	return nil
}

// cmdStatus says whether weft-cni can serve ADD: weftd answers and holds
// its node lease. weftd down is ErrLimitedConnectivity (51): weftd is the
// data path, so pods already on the node are cut off too. weftd up without
// its lease or subnet is ErrPluginNotAvailable (50).
func cmdStatus(args *skel.CmdArgs) error {
	s, err := newSession(args.StdinData)
	if err != nil {
		return err
	}
	defer s.done()
	st, err := s.cl.Status(s.ctx)
	var nr *api.NotRunningError
	switch {
	case errors.As(err, &nr):
		return types.NewError(types.ErrLimitedConnectivity,
			notRunningMsg(s.conf.Socket, nr.Stale)+"; pods on this node have no network until it is back", "")
	case err != nil:
		return types.NewError(types.ErrPluginNotAvailable, weftdError(s.conf, "status", err).Msg, "")
	case st.Registry.State != api.RegistryOK:
		why := st.Registry.LastError
		if why == "" {
			why = "no error given"
		}
		return types.NewError(types.ErrPluginNotAvailable,
			fmt.Sprintf("weftd on %s (node %s) does not hold its node lease: registry %s is %s since %s (%s); check the registry (etcd) is reachable",
				s.conf.Socket, st.Node, st.Registry.Backend, st.Registry.State, st.Registry.Since.Format(time.RFC3339), why), "")
	case !st.Subnet.IsValid():
		return types.NewError(types.ErrPluginNotAvailable,
			fmt.Sprintf("weftd on %s (node %s) has no pod subnet yet: it is still acquiring its lease", s.conf.Socket, st.Node), "")
	}
	return nil
}
