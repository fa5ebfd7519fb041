package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
)

// The object endpoints: `weft apply -f`, `weft delete -f` and `weft
// services`. Apply goes through weftd rather than straight to the
// registry so that one place checks what is stored (the service and
// cluster CIDRs are weftd's configuration), allocates cluster IPs under
// one lock, and holds the registry's credentials; the CLI only needs the
// API socket.

// ObjectService is what the object endpoints need. A Service that also
// implements it serves them; otherwise they answer 501.
type ObjectService interface {
	// Apply stores every object of req.Documents, or none if any is
	// refused (ErrBadRequest naming each problem).
	Apply(ctx context.Context, req ApplyRequest) ([]ApplyResult, error)
	// DeleteObjects removes the objects req.Documents names; an object
	// that is not stored is reported, not an error.
	DeleteObjects(ctx context.Context, req ApplyRequest) ([]ApplyResult, error)
	// Services lists the Services this node serves, as compiled.
	Services(ctx context.Context) ([]ServiceInfo, error)
}

// MaxApplyBytes bounds an apply request: the documents of one input.
const MaxApplyBytes = 8 << 20

// ApplyRequest carries the documents of `weft apply -f` or `weft delete
// -f`: YAML ("---" separated) or JSON Kubernetes objects of the kinds weft
// consumes (Service, EndpointSlice, NetworkPolicy, Namespace, Pod).
type ApplyRequest struct {
	Documents string `json:"documents"`
	// DryRun checks (and allocates) without storing.
	DryRun bool `json:"dry_run,omitempty"`
}

// Normalize checks the request.
func (r *ApplyRequest) Normalize() error {
	if r.Documents == "" {
		return BadRequest("documents", "empty; want YAML or JSON Kubernetes objects")
	}
	if len(r.Documents) > MaxApplyBytes {
		return BadRequest("documents", fmt.Sprintf("longer than %d bytes", MaxApplyBytes))
	}
	return nil
}

// Apply actions.
const (
	ActionCreated    = "created"
	ActionConfigured = "configured"
	ActionUnchanged  = "unchanged"
	ActionDeleted    = "deleted"
	ActionNotFound   = "not found"
)

// ApplyResult is what happened to one object.
type ApplyResult struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	Action    string `json:"action"` // Action* constants
	// ClusterIP is a Service's cluster IP as stored (allocated when the
	// document gave none).
	ClusterIP string `json:"cluster_ip,omitempty"`
}

// ServicePort is one port of a Service.
type ServicePort struct {
	Name     string `json:"name,omitempty"`
	Port     uint16 `json:"port"`
	Protocol string `json:"protocol"` // TCP or UDP
	// TargetPort is the endpoints' port: a number, or a container port
	// name resolved per pod.
	TargetPort string `json:"target_port"`
}

// String is "name:80/TCP->8080" ("80/TCP" when unnamed and the target is
// the port).
func (p ServicePort) String() string {
	s := fmt.Sprintf("%d/%s", p.Port, p.Protocol)
	if p.Name != "" {
		s = p.Name + ":" + s
	}
	if p.TargetPort != "" && p.TargetPort != fmt.Sprint(p.Port) {
		s += "->" + p.TargetPort
	}
	return s
}

// ServiceInfo is one Service as this node serves it (GET /v1/services).
type ServiceInfo struct {
	Namespace string        `json:"namespace"`
	Name      string        `json:"name"`
	ClusterIP netip.Addr    `json:"cluster_ip,omitzero"`
	Ports     []ServicePort `json:"ports"`
	// Ready and Total count distinct endpoint addresses.
	Ready int `json:"ready"`
	Total int `json:"total"`
	// Source: "EndpointSlice", "selector" or "none".
	Source string `json:"source"`
	// Skipped says why the Service gets no frontends ("headless",
	// "invalid: ..."); empty when it is served.
	Skipped string `json:"skipped,omitempty"`
	// NewFlows counts flows this node load-balanced, over all ports.
	NewFlows uint64 `json:"new_flows"`
}

func (s *Server) objectRoutes() {
	obj, ok := s.svc.(ObjectService)
	if !ok {
		obj = noObjects{}
	}
	s.mux.HandleFunc("POST /v1/objects", s.handleApply(obj.Apply))
	s.mux.HandleFunc("POST /v1/objects/delete", s.handleApply(obj.DeleteObjects))
	s.mux.HandleFunc("GET /v1/services", handleGet(s, obj.Services))
}

// handleApply is handlePost with room for MaxApplyBytes of documents.
func (s *Server) handleApply(fn func(context.Context, ApplyRequest) ([]ApplyResult, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req ApplyRequest
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxApplyBytes+4096))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				s.fail(w, r, BadRequest("documents", fmt.Sprintf("longer than %d bytes", MaxApplyBytes)))
				return
			}
			s.fail(w, r, BadRequest("body", err.Error()))
			return
		}
		if err := req.Normalize(); err != nil {
			s.fail(w, r, err)
			return
		}
		v, err := fn(r.Context(), req)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, v)
	}
}

// noObjects answers for a Service without an object store.
type noObjects struct{}

func (noObjects) Apply(context.Context, ApplyRequest) ([]ApplyResult, error) {
	return nil, fmt.Errorf("this weftd stores no objects: %w", ErrNotImplemented)
}

func (noObjects) DeleteObjects(context.Context, ApplyRequest) ([]ApplyResult, error) {
	return nil, fmt.Errorf("this weftd stores no objects: %w", ErrNotImplemented)
}

func (noObjects) Services(context.Context) ([]ServiceInfo, error) {
	return nil, fmt.Errorf("this weftd serves no Services: %w", ErrNotImplemented)
}

// Apply stores the objects of req (see ObjectService).
func (c *Client) Apply(ctx context.Context, req ApplyRequest) ([]ApplyResult, error) {
	var v []ApplyResult
	return v, c.do(ctx, http.MethodPost, "/v1/objects", req, &v)
}

// DeleteObjects removes the objects req names.
func (c *Client) DeleteObjects(ctx context.Context, req ApplyRequest) ([]ApplyResult, error) {
	var v []ApplyResult
	return v, c.do(ctx, http.MethodPost, "/v1/objects/delete", req, &v)
}

// Services lists the Services the node serves.
func (c *Client) Services(ctx context.Context) ([]ServiceInfo, error) {
	var v []ServiceInfo
	return v, c.do(ctx, http.MethodGet, "/v1/services", nil, &v)
}

var _ ObjectService = (*Client)(nil)

// PodMeta is the Kubernetes metadata of an attached pod beyond its
// namespace and name: what Service selectors and NetworkPolicy peers and
// named ports need. weft-cni passes the UID (K8S_POD_UID); labels and
// named ports come from API callers (the sim) or from a Pod object
// applied with `weft apply`.
type PodMeta struct {
	PodUID         string            `json:"pod_uid,omitempty"`
	Labels         map[string]string `json:"labels,omitempty"`
	ContainerPorts []ContainerPort   `json:"container_ports,omitempty"`
}

// ContainerPort is a pod's named port (a container port with a name).
type ContainerPort struct {
	Name     string `json:"name"`
	Port     uint16 `json:"port"`
	Protocol string `json:"protocol,omitempty"` // TCP (default) or UDP
}

// Bounds of PodMeta, as the Kubernetes API sets them.
const (
	maxLabels        = 64
	maxLabelKey      = 253 + 1 + 63 // prefix/name
	maxLabelValue    = 63
	maxPortName      = 15
	maxContainerPort = 64
)

func (m *PodMeta) check() error {
	if len(m.PodUID) > 128 {
		return BadRequest("pod_uid", "longer than 128 bytes")
	}
	if len(m.Labels) > maxLabels {
		return BadRequest("labels", fmt.Sprintf("%d labels, more than %d", len(m.Labels), maxLabels))
	}
	for k, v := range m.Labels {
		if k == "" || len(k) > maxLabelKey || len(v) > maxLabelValue {
			return BadRequest("labels", fmt.Sprintf("%q=%q: a key has 1..%d bytes, a value at most %d", k, v, maxLabelKey, maxLabelValue))
		}
	}
	if len(m.ContainerPorts) > maxContainerPort {
		return BadRequest("container_ports", fmt.Sprintf("%d ports, more than %d", len(m.ContainerPorts), maxContainerPort))
	}
	for i := range m.ContainerPorts {
		p := &m.ContainerPorts[i]
		if p.Protocol == "" {
			p.Protocol = "TCP"
		}
		switch {
		case p.Name == "" || len(p.Name) > maxPortName:
			return BadRequest("container_ports", fmt.Sprintf("port name %q: want 1..%d characters", p.Name, maxPortName))
		case p.Port == 0:
			return BadRequest("container_ports", fmt.Sprintf("port %s: number 0", p.Name))
		case p.Protocol != "TCP" && p.Protocol != "UDP":
			return BadRequest("container_ports", fmt.Sprintf("port %s: protocol %q, want TCP or UDP", p.Name, p.Protocol))
		}
	}
	return nil
}
