package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/weftnet/weft/api"
)

func TestLoadConf(t *testing.T) {
	long := "/" + strings.Repeat("s", maxSocketPath)
	tests := []struct {
		name     string
		conf     string
		wantCode uint     // 0: valid
		wantMsg  []string // substrings of the error message
		check    func(t *testing.T, c *NetConf)
	}{
		{name: "defaults", conf: `{"cniVersion":"1.1.0","name":"weft","type":"weft-cni"}`,
			check: func(t *testing.T, c *NetConf) {
				if c.Socket != api.DefaultSocket || c.PendingDir != defaultPendingDir || c.timeout != defaultTimeout {
					t.Errorf("defaults: socket %q pendingDir %q timeout %s", c.Socket, c.PendingDir, c.timeout)
				}
			}},
		{name: "all fields", conf: `{"cniVersion":"0.4.0","name":"weft","type":"weft-cni","socket":"/x/s.sock","pendingDir":"/p","timeout":"5s","runtimeConfig":{"a":1},"args":{"cni":{}}}`,
			check: func(t *testing.T, c *NetConf) {
				if c.Socket != "/x/s.sock" || c.PendingDir != "/p" || c.timeout != 5*time.Second {
					t.Errorf("got socket %q pendingDir %q timeout %s", c.Socket, c.PendingDir, c.timeout)
				}
			}},
		{name: "version 1.0.0", conf: `{"cniVersion":"1.0.0","name":"weft","type":"weft-cni"}`},
		{name: "socket relative", conf: `{"cniVersion":"1.1.0","name":"weft","socket":"run/weftd.sock"}`,
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{"socket", "run/weftd.sock", "absolute"}},
		{name: "socket not a string", conf: `{"cniVersion":"1.1.0","name":"weft","socket":5}`,
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{"socket", "string", "number"}},
		{name: "socket too long", conf: `{"cniVersion":"1.1.0","name":"weft","socket":"` + long + `"}`,
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{"socket", "longer than"}},
		{name: "pendingDir relative", conf: `{"cniVersion":"1.1.0","name":"weft","pendingDir":"pending"}`,
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{"pendingDir", "absolute"}},
		{name: "timeout garbage", conf: `{"cniVersion":"1.1.0","name":"weft","timeout":"soon"}`,
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{"timeout", "soon"}},
		{name: "timeout negative", conf: `{"cniVersion":"1.1.0","name":"weft","timeout":"-1s"}`,
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{"timeout"}},
		{name: "timeout number", conf: `{"cniVersion":"1.1.0","name":"weft","timeout":30}`,
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{"timeout", "string"}},
		{name: "prevResult broken", conf: `{"cniVersion":"1.1.0","name":"weft","prevResult":{"cniVersion":"1.1.0","ips":[{"address":"nonsense"}]}}`,
			wantCode: types.ErrInvalidNetworkConfig, wantMsg: []string{"prevResult"}},
		{name: "version too old", conf: `{"cniVersion":"0.3.1","name":"weft"}`,
			wantCode: types.ErrIncompatibleCNIVersion, wantMsg: []string{"incompatible"}},
		{name: "version too new", conf: `{"cniVersion":"2.0.0","name":"weft"}`,
			wantCode: types.ErrIncompatibleCNIVersion},
		{name: "version missing", conf: `{"name":"weft"}`,
			wantCode: types.ErrIncompatibleCNIVersion},
		{name: "not JSON", conf: `{"cniVersion":`,
			wantCode: types.ErrDecodingFailure, wantMsg: []string{"JSON"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := loadConf([]byte(tt.conf))
			if tt.wantCode == 0 {
				if err != nil {
					t.Fatalf("loadConf: %v", err)
				}
				if tt.check != nil {
					tt.check(t, c)
				}
				return
			}
			cniError(t, err, tt.wantCode, tt.wantMsg...)
			var e *types.Error
			if errors.As(err, &e) && e.Code != types.ErrIncompatibleCNIVersion && strings.Contains(e.Msg, "\n") {
				t.Errorf("message spans lines: %q", e.Msg)
			}
		})
	}
}

func TestParseArgs(t *testing.T) {
	tests := []struct {
		in   string
		want podArgs
	}{
		{"", podArgs{}},
		{"K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-1", podArgs{Namespace: "default", Name: "web-1"}},
		// CRI's order varies and it adds keys of its own.
		{"K8S_POD_UID=123;IgnoreUnknown=1;K8S_POD_NAME=web-1;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_NAMESPACE=kube-system",
			podArgs{"kube-system", "web-1", "123"}},
		{"garbage;K8S_POD_NAME=x;=;;", podArgs{Name: "x"}},
		{"K8S_POD_NAME=a=b", podArgs{Name: "a=b"}},
	}
	for _, tt := range tests {
		if got := parseArgs(tt.in); got != tt.want {
			t.Errorf("parseArgs(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}
