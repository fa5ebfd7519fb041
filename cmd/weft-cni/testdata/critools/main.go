// Command criclient is a tiny kubelet stand-in for weft-cni's containerd
// test: it drives a CRI runtime over its gRPC socket, so containerd runs
// weft-cni exactly as it does under the kubelet. It is its own module so
// that the CRI API stays out of weft's go.mod.
//
//	criclient -endpoint /path/containerd.sock status
//	criclient -endpoint ... run NAME NAMESPACE UID [CPORT:HPORT/PROTO...]   -> {"id":..,"ip":..}
//	criclient -endpoint ... stop ID
//	criclient -endpoint ... rm ID
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func main() {
	endpoint := flag.String("endpoint", "", "CRI socket path")
	timeout := flag.Duration("timeout", 60*time.Second, "deadline of the call")
	flag.Parse()
	if err := run(*endpoint, *timeout, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "criclient:", err)
		os.Exit(1)
	}
}

func run(endpoint string, timeout time.Duration, args []string) error {
	if endpoint == "" || len(args) == 0 {
		return fmt.Errorf("usage: criclient -endpoint SOCKET status|run NAME NAMESPACE UID [CPORT:HPORT/PROTO...]|stop ID|rm ID")
	}
	conn, err := grpc.NewClient("unix://"+endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	rs := cri.NewRuntimeServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out := json.NewEncoder(os.Stdout)
	switch {
	case args[0] == "status":
		v, err := rs.Version(ctx, &cri.VersionRequest{})
		if err != nil {
			return fmt.Errorf("version: %w", err)
		}
		st, err := rs.Status(ctx, &cri.StatusRequest{})
		if err != nil {
			return fmt.Errorf("status: %w", err)
		}
		conds := map[string]any{"runtime": v.RuntimeName + " " + v.RuntimeVersion}
		for _, c := range st.GetStatus().GetConditions() {
			conds[c.Type] = map[string]any{"status": c.Status, "reason": c.Reason, "message": c.Message}
		}
		return out.Encode(conds)
	case args[0] == "run" && len(args) >= 4:
		ports, err := portMappings(args[4:])
		if err != nil {
			return err
		}
		cfg := &cri.PodSandboxConfig{
			PortMappings: ports,
			Metadata:     &cri.PodSandboxMetadata{Name: args[1], Namespace: args[2], Uid: args[3]},
			Hostname:     args[1],
			LogDirectory: "",
			Linux: &cri.LinuxPodSandboxConfig{SecurityContext: &cri.LinuxSandboxSecurityContext{
				NamespaceOptions: &cri.NamespaceOption{Network: cri.NamespaceMode_POD},
			}},
		}
		r, err := rs.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: cfg})
		if err != nil {
			return fmt.Errorf("RunPodSandbox: %w", err)
		}
		st, err := rs.PodSandboxStatus(ctx, &cri.PodSandboxStatusRequest{PodSandboxId: r.PodSandboxId})
		if err != nil {
			return fmt.Errorf("PodSandboxStatus: %w", err)
		}
		return out.Encode(map[string]any{"id": r.PodSandboxId, "ip": st.GetStatus().GetNetwork().GetIp(), "state": st.GetStatus().GetState().String()})
	case args[0] == "stop" && len(args) == 2:
		if _, err := rs.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: args[1]}); err != nil {
			return fmt.Errorf("StopPodSandbox: %w", err)
		}
		return out.Encode(map[string]any{"stopped": args[1]})
	case args[0] == "rm" && len(args) == 2:
		if _, err := rs.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: args[1]}); err != nil {
			return fmt.Errorf("RemovePodSandbox: %w", err)
		}
		return out.Encode(map[string]any{"removed": args[1]})
	}
	return fmt.Errorf("unknown command %q", args)
}

// portMappings parses CPORT:HPORT/PROTO (PROTO tcp, udp or sctp) into the
// sandbox's port mappings, as the kubelet fills them from a pod's
// containers' hostPort fields.
func portMappings(args []string) ([]*cri.PortMapping, error) {
	var out []*cri.PortMapping
	for _, a := range args {
		ports, proto, ok := strings.Cut(a, "/")
		cport, hport, ok2 := strings.Cut(ports, ":")
		p, known := cri.Protocol_value[strings.ToUpper(proto)]
		c, err1 := strconv.ParseInt(cport, 10, 32)
		h, err2 := strconv.ParseInt(hport, 10, 32)
		if !ok || !ok2 || !known || err1 != nil || err2 != nil {
			return nil, fmt.Errorf("port mapping %q: want CPORT:HPORT/PROTO", a)
		}
		out = append(out, &cri.PortMapping{Protocol: cri.Protocol(p), ContainerPort: int32(c), HostPort: int32(h)})
	}
	return out, nil
}
