package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"reflect"
	"runtime/debug"
	"strings"
	"time"
)

// maxRequestBody bounds POST bodies: a base64 MaxTraceFrame plus room.
const maxRequestBody = 256 << 10

// Server serves a Service over HTTP. It is safe to Serve on several
// listeners; Shutdown stops them all.
type Server struct {
	svc     Service
	log     *slog.Logger
	mux     *http.ServeMux
	httpSrv *http.Server
}

// NewServer returns a server for svc. A nil logger discards logs.
func NewServer(svc Service, logger *slog.Logger) *Server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{svc: svc, log: logger, mux: http.NewServeMux()}
	s.routes()
	s.httpSrv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	return s
}

func (s *Server) routes() {
	s.mux.HandleFunc("GET /v1/status", handleGet(s, s.svc.Status))
	s.mux.HandleFunc("GET /v1/ports", handleGet(s, s.svc.Ports))
	s.mux.HandleFunc("POST /v1/ports", handlePost(s, (*AttachRequest).Normalize, s.svc.Attach))
	s.mux.HandleFunc("DELETE /v1/ports/{pod_id}", s.detach)
	s.mux.HandleFunc("GET /v1/peers", handleGet(s, s.svc.Peers))
	s.mux.HandleFunc("GET /v1/fdb", handleGet(s, s.svc.FDB))
	s.mux.HandleFunc("GET /v1/routes", handleGet(s, s.svc.Routes))
	s.mux.HandleFunc("GET /v1/neigh", handleGet(s, s.svc.Neighbours))
	s.mux.HandleFunc("GET /v1/ipam", handleGet(s, s.ipam))
	s.mux.HandleFunc("GET /v1/subnets", handleGet(s, s.svc.Subnets))
	s.mux.HandleFunc("GET /v1/counters", handleGet(s, s.svc.Counters))
	s.mux.HandleFunc("POST /v1/trace", handlePost(s, (*TraceRequest).Normalize, s.svc.Trace))
	s.objectRoutes()
	s.policyRoutes()
	s.conntrackRoutes()
	s.foreignRoutes()
}

// ServeHTTP answers unknown paths and methods with a JSON Error like every
// other failure, and turns a panicking Service into a 500.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			s.log.Error("api: handler panicked", "method", r.Method, "path", r.URL.Path, "panic", p, "stack", string(debug.Stack()))
			s.fail(w, r, fmt.Errorf("internal error: %v", p))
		}
	}()
	if h, pattern := s.mux.Handler(r); pattern == "" {
		s.noRoute(w, r, h)
		return
	}
	start := time.Now()
	s.mux.ServeHTTP(w, r)
	s.log.Debug("api: request", "method", r.Method, "path", r.URL.Path, "took", time.Since(start))
}

// noRoute reports what the mux would have said (404, or 405 with Allow)
// as JSON.
func (s *Server) noRoute(w http.ResponseWriter, r *http.Request, h http.Handler) {
	rec := &statusRecorder{header: http.Header{}}
	h.ServeHTTP(rec, r)
	switch {
	case rec.status == http.StatusMethodNotAllowed:
		allow := rec.header.Get("Allow")
		w.Header().Set("Allow", allow)
		writeJSON(w, rec.status, Error{
			Error: fmt.Sprintf("method %s not allowed on %s (allowed: %s)", r.Method, r.URL.Path, allow),
			Code:  CodeBadRequest,
		})
	case rec.status >= 300 && rec.status < 400: // path cleaning redirect
		for k, v := range rec.header {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.status)
	default:
		writeJSON(w, http.StatusNotFound, Error{
			Error: fmt.Sprintf("no endpoint %s %s", r.Method, r.URL.Path),
			Code:  CodeNotFound,
		})
	}
}

// statusRecorder captures the status and headers of the mux's built-in
// error handlers and drops their text bodies.
type statusRecorder struct {
	header http.Header
	status int
}

func (r *statusRecorder) Header() http.Header         { return r.header }
func (r *statusRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (r *statusRecorder) WriteHeader(status int)      { r.status = status }

func handleGet[T any](s *Server, fn func(context.Context) (T, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := fn(r.Context())
		if err != nil {
			s.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, v)
	}
}

func handlePost[Req, Resp any](s *Server, normalize func(*Req) error, fn func(context.Context, Req) (Resp, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req Req
		if err := decodeBody(w, r, &req); err != nil {
			s.fail(w, r, err)
			return
		}
		if err := normalize(&req); err != nil {
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

func (s *Server) detach(w http.ResponseWriter, r *http.Request) {
	req := DetachRequest{PodID: r.PathValue("pod_id"), IfName: r.URL.Query().Get("ifname")}
	if err := req.Normalize(); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.svc.Detach(r.Context(), req); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// ipam sends an empty allocation list as [] rather than null.
func (s *Server) ipam(ctx context.Context) (IPAM, error) {
	v, err := s.svc.IPAM(ctx)
	if v.Allocations == nil {
		v.Allocations = []IPAMAllocation{}
	}
	return v, err
}

// decodeBody reads one JSON object into v, rejecting unknown fields, so
// that a misspelt field is an error rather than a silent default.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequestBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if dec.More() {
			return BadRequest("body", "more than one JSON value")
		}
		return nil
	}
	var (
		typeErr *json.UnmarshalTypeError
		syntax  *json.SyntaxError
		tooBig  *http.MaxBytesError
	)
	switch {
	case errors.Is(err, io.EOF):
		return BadRequest("body", "empty; want a JSON object")
	case errors.As(err, &tooBig):
		return BadRequest("body", fmt.Sprintf("longer than %d bytes", tooBig.Limit))
	case errors.As(err, &typeErr):
		return BadRequest(typeErr.Field, fmt.Sprintf("want %s, got JSON %s", typeErr.Type, typeErr.Value))
	case errors.As(err, &syntax):
		return BadRequest("body", fmt.Sprintf("invalid JSON at byte %d: %v", syntax.Offset, err))
	}
	// encoding/json has no typed error for unknown fields or for values
	// its TextUnmarshalers reject (a malformed address).
	msg := strings.TrimPrefix(err.Error(), "json: ")
	if name, ok := strings.CutPrefix(msg, "unknown field "); ok {
		return BadRequest(strings.Trim(name, `"`), "unknown field")
	}
	return BadRequest("body", msg)
}

// fail answers with err's status and Error body.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, body := errorBody(err)
	if status >= 500 {
		s.log.Warn("api: request failed", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	} else {
		s.log.Debug("api: request refused", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	}
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	// Empty lists are [] and empty maps {}, never null, so that scripts
	// can iterate without a null check.
	switch rv := reflect.ValueOf(v); {
	case rv.Kind() == reflect.Slice && rv.IsNil():
		v = []struct{}{}
	case rv.Kind() == reflect.Map && rv.IsNil():
		v = struct{}{}
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(Error{Error: "encode response: " + err.Error(), Code: CodeInternal})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// Serve answers requests on ln until Shutdown; it then returns nil.
func (s *Server) Serve(ln net.Listener) error {
	s.log.Info("api: serving", "addr", ln.Addr().String())
	err := s.httpSrv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// ListenAndServe opens the socket at socketPath with Listen and serves it
// until Shutdown. Errors opening the socket (another weftd running, no
// permission) are returned at once.
func (s *Server) ListenAndServe(socketPath string) error {
	ln, err := Listen(socketPath)
	if err != nil {
		return err
	}
	return s.Serve(ln)
}

// Shutdown stops accepting, waits for requests in flight until ctx ends,
// and removes the socket.
func (s *Server) Shutdown(ctx context.Context) error {
	return s.httpSrv.Shutdown(ctx)
}
