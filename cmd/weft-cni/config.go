package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/weftnet/weft/api"
)

// supportedVersions are the CNI spec versions weft-cni speaks. 0.4.0 is
// the oldest with CHECK; GC and STATUS need 1.1.0 (skel enforces that).
var supportedVersions = []string{"0.4.0", "1.0.0", "1.1.0"}

// Defaults of the network config fields weft-cni adds.
const (
	defaultPendingDir = "/var/lib/weft/cni-pending"
	defaultTimeout    = 30 * time.Second
	maxSocketPath     = 107 // sockaddr_un.sun_path less the NUL
)

// NetConf is weft-cni's network configuration: the standard fields plus
//
//	"socket":     weftd's API socket (default /run/weft/weftd.sock)
//	"pendingDir": where DEL records a release weftd could not take because
//	              it was down (default /var/lib/weft/cni-pending)
//	"timeout":    how long one verb waits for weftd, a Go duration
//	              (default "30s")
//	"runtimeConfig": {"portMappings": [...]}: hostPorts, passed by runtimes
//	              when the config declares "capabilities": {"portMappings": true}
//
// Unknown fields are ignored: runtimes inject their own (runtimeConfig,
// args, cni.dev/...).
type NetConf struct {
	types.PluginConf
	Socket     string `json:"socket,omitempty"`
	PendingDir string `json:"pendingDir,omitempty"`
	Timeout    string `json:"timeout,omitempty"`
	// RuntimeConfig carries the capabilities' arguments (portmap.go).
	RuntimeConfig runtimeConfig `json:"runtimeConfig,omitempty"`

	timeout time.Duration
}

// loadConf decodes and checks a network config. Errors are CNI errors:
// ErrIncompatibleCNIVersion for a version weft-cni does not speak,
// ErrDecodingFailure for input that is not JSON, ErrInvalidNetworkConfig
// naming the field otherwise.
func loadConf(stdin []byte) (*NetConf, error) {
	conf := &NetConf{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return nil, invalidConf(te.Field, fmt.Sprintf("want a JSON %s, got %s", jsonKind(te.Type.Kind().String()), te.Value))
		}
		return nil, types.NewError(types.ErrDecodingFailure, "network config is not valid JSON: "+err.Error(), "")
	}
	// skel checks the version before calling a verb; checking again here
	// keeps the rule in one place for in-process callers too.
	if !slices.Contains(supportedVersions, conf.CNIVersion) {
		return nil, types.NewError(types.ErrIncompatibleCNIVersion, "incompatible CNI versions",
			fmt.Sprintf("config has cniVersion %q; weft-cni supports %s", conf.CNIVersion, strings.Join(supportedVersions, ", ")))
	}
	if conf.Socket == "" {
		conf.Socket = api.DefaultSocket
	}
	if !filepath.IsAbs(conf.Socket) {
		return nil, invalidConf("socket", fmt.Sprintf("%q is not an absolute path (weftd's API socket, e.g. %s)", conf.Socket, api.DefaultSocket))
	}
	if len(conf.Socket) > maxSocketPath {
		return nil, invalidConf("socket", fmt.Sprintf("%q is longer than %d bytes, too long for a unix socket", conf.Socket, maxSocketPath))
	}
	if conf.PendingDir == "" {
		conf.PendingDir = defaultPendingDir
	}
	if !filepath.IsAbs(conf.PendingDir) {
		return nil, invalidConf("pendingDir", fmt.Sprintf("%q is not an absolute path (e.g. %s)", conf.PendingDir, defaultPendingDir))
	}
	conf.timeout = defaultTimeout
	if conf.Timeout != "" {
		d, err := time.ParseDuration(conf.Timeout)
		if err != nil || d <= 0 || d > 10*time.Minute {
			return nil, invalidConf("timeout", fmt.Sprintf("%q is not a positive duration of at most 10m, e.g. \"30s\"", conf.Timeout))
		}
		conf.timeout = d
	}
	if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
		return nil, invalidConf("prevResult", err.Error())
	}
	return conf, nil
}

func invalidConf(field, msg string) *types.Error {
	return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("invalid network config: %s: %s", field, msg), "")
}

// jsonKind names a Go kind the way a JSON author thinks of it.
func jsonKind(kind string) string {
	switch {
	case kind == "string":
		return "string"
	case strings.HasPrefix(kind, "int"), strings.HasPrefix(kind, "uint"), strings.HasPrefix(kind, "float"):
		return "number"
	case kind == "bool":
		return "boolean"
	case kind == "slice", kind == "array":
		return "array"
	}
	return "object"
}

// podArgs are the CNI_ARGS weft-cni reads: the pod's Kubernetes namespace,
// name and UID, which weftd publishes as the pod's metadata (Service
// selectors and policies match pods by namespace/name and the labels a Pod
// object gives them).
type podArgs struct {
	Namespace, Name, UID string
}

// parseArgs reads K8S_POD_NAMESPACE, K8S_POD_NAME and K8S_POD_UID from CNI_ARGS
// ("K1=V1;K2=V2"). Every other key, and any malformed pair, is ignored:
// runtimes differ in what else they send, and weftd checks the values.
func parseArgs(s string) podArgs {
	var a podArgs
	for pair := range strings.SplitSeq(s, ";") {
		k, v, ok := strings.Cut(pair, "=")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "K8S_POD_NAMESPACE":
			a.Namespace = strings.TrimSpace(v)
		case "K8S_POD_NAME":
			a.Name = strings.TrimSpace(v)
		case "K8S_POD_UID":
			a.UID = strings.TrimSpace(v)
		}
	}
	return a
}
