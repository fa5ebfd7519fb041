package api

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
)

// The conntrack endpoints:
//
//	GET  /v1/conntrack?ip=10.244.1.3&port=53&limit=100  -> []ConntrackFlow
//	POST /v1/conntrack/flush {"ip": ..., "port": ...}    -> ConntrackFlushResult
//
// They live apart from Service so that a node (or a fake) that has no
// connection tracking need not implement them: the server answers 501.

// ConntrackService is what a node implements to serve the conntrack
// endpoints.
type ConntrackService interface {
	Conntrack(ctx context.Context, q ConntrackQuery) ([]ConntrackFlow, error)
	FlushConntrack(ctx context.Context, q ConntrackQuery) (ConntrackFlushResult, error)
}

// ConntrackQuery selects flows: IP (when set) is any address of either
// direction of the flow, Port (when non-zero) any port. Limit caps a
// listing (0: the server's default, MaxConntrackList).
type ConntrackQuery struct {
	IP    netip.Addr `json:"ip,omitzero"`
	Port  uint16     `json:"port,omitempty"`
	Limit int        `json:"limit,omitempty"`
}

// MaxConntrackList bounds one listing: a full table is a million flows.
const MaxConntrackList = 100_000

// Normalize checks the query and fills the default limit.
func (q *ConntrackQuery) Normalize() error {
	if q.IP.IsValid() && !q.IP.Is4() {
		return BadRequest("ip", fmt.Sprintf("%s is not an IPv4 address", q.IP))
	}
	if q.Limit < 0 || q.Limit > MaxConntrackList {
		return BadRequest("limit", fmt.Sprintf("%d outside 0..%d", q.Limit, MaxConntrackList))
	}
	if q.Limit == 0 {
		q.Limit = MaxConntrackList
	}
	return nil
}

func (q ConntrackQuery) values() url.Values {
	v := url.Values{}
	if q.IP.IsValid() {
		v.Set("ip", q.IP.String())
	}
	if q.Port != 0 {
		v.Set("port", strconv.Itoa(int(q.Port)))
	}
	if q.Limit != 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	return v
}

func parseConntrackQuery(v url.Values) (ConntrackQuery, error) {
	var q ConntrackQuery
	if s := v.Get("ip"); s != "" {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return q, BadRequest("ip", fmt.Sprintf("%q is not an IP address", s))
		}
		q.IP = a
	}
	if s := v.Get("port"); s != "" {
		p, err := strconv.ParseUint(s, 10, 16)
		if err != nil || p == 0 {
			return q, BadRequest("port", fmt.Sprintf("%q is not a port (1..65535)", s))
		}
		q.Port = uint16(p)
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			return q, BadRequest("limit", fmt.Sprintf("%q is not a number", s))
		}
		q.Limit = n
	}
	return q, q.Normalize()
}

// ConntrackTuple is one direction of a flow.
type ConntrackTuple struct {
	Src netip.AddrPort `json:"src"`
	Dst netip.AddrPort `json:"dst"`
}

// ConntrackFlow is one tracked flow.
type ConntrackFlow struct {
	Proto   string         `json:"proto"` // "TCP", "UDP"
	State   string         `json:"state"` // TCP: syn_sent, syn_recv, established, fin_wait, time_wait, close; UDP: none
	Orig    ConntrackTuple `json:"orig"`  // as the client sent it (to the cluster IP)
	Reply   ConntrackTuple `json:"reply"` // as the backend answers
	Replied bool           `json:"replied"`
	Service string         `json:"service,omitempty"` // "namespace/name:port"
	// Idle is the time since the flow's last packet (to about a second);
	// Expires is how long it lives without another.
	Idle    Duration `json:"idle"`
	Expires Duration `json:"expires"`
}

// ConntrackFlushResult says how many flows a flush removed.
type ConntrackFlushResult struct {
	Flushed int `json:"flushed"`
}

func (s *Server) conntrackRoutes() {
	s.mux.HandleFunc("GET /v1/conntrack", func(w http.ResponseWriter, r *http.Request) {
		cs, ok := s.svc.(ConntrackService)
		if !ok {
			s.fail(w, r, fmt.Errorf("conntrack: %w", ErrNotImplemented))
			return
		}
		q, err := parseConntrackQuery(r.URL.Query())
		if err != nil {
			s.fail(w, r, err)
			return
		}
		flows, err := cs.Conntrack(r.Context(), q)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if flows == nil {
			flows = []ConntrackFlow{}
		}
		writeJSON(w, http.StatusOK, flows)
	})
	s.mux.HandleFunc("POST /v1/conntrack/flush", func(w http.ResponseWriter, r *http.Request) {
		cs, ok := s.svc.(ConntrackService)
		if !ok {
			s.fail(w, r, fmt.Errorf("conntrack flush: %w", ErrNotImplemented))
			return
		}
		var q ConntrackQuery
		if err := decodeBody(w, r, &q); err != nil {
			s.fail(w, r, err)
			return
		}
		if err := q.Normalize(); err != nil {
			s.fail(w, r, err)
			return
		}
		res, err := cs.FlushConntrack(r.Context(), q)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, res)
	})
}

// Conntrack lists the flows matching q.
func (c *Client) Conntrack(ctx context.Context, q ConntrackQuery) ([]ConntrackFlow, error) {
	var v []ConntrackFlow
	path := "/v1/conntrack"
	if e := q.values().Encode(); e != "" {
		path += "?" + e
	}
	return v, c.do(ctx, http.MethodGet, path, nil, &v)
}

// FlushConntrack removes the flows matching q (all with a zero query).
func (c *Client) FlushConntrack(ctx context.Context, q ConntrackQuery) (ConntrackFlushResult, error) {
	var v ConntrackFlushResult
	return v, c.do(ctx, http.MethodPost, "/v1/conntrack/flush", q, &v)
}

var _ ConntrackService = (*Client)(nil)
