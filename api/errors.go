package api

import (
	"context"
	"errors"
	"net/http"
)

// Error is the body of every failed response.
type Error struct {
	Error string `json:"error"`           // one line for people
	Code  string `json:"code"`            // one of the Code* constants, for programs
	Field string `json:"field,omitempty"` // the request field at fault (bad_request)
}

// Error codes on the wire.
const (
	CodeBadRequest     = "bad_request"
	CodeNotFound       = "not_found"
	CodeConflict       = "conflict"
	CodeExhausted      = "exhausted"
	CodeNotReady       = "not_ready"
	CodeNotImplemented = "not_implemented"
	CodeTimeout        = "timeout"
	CodeForbidden      = "forbidden"
	CodeInternal       = "internal"
)

// kindError is a sentinel that fixes the HTTP status and code of every
// error wrapping it.
type kindError struct {
	code   string
	status int
	text   string
}

func (k *kindError) Error() string { return k.text }

// Sentinel errors. A Service wraps one to say what went wrong, e.g.
// fmt.Errorf("pod %s: %w", id, api.ErrNotFound); the server answers with
// its HTTP status and the client's error matches it again with errors.Is.
// An error wrapping none of them is a 500.
var (
	ErrBadRequest     error = &kindError{CodeBadRequest, http.StatusBadRequest, "bad request"}
	ErrNotFound       error = &kindError{CodeNotFound, http.StatusNotFound, "not found"}
	ErrConflict       error = &kindError{CodeConflict, http.StatusConflict, "conflict"}
	ErrExhausted      error = &kindError{CodeExhausted, http.StatusConflict, "address pool exhausted"}
	ErrNotReady       error = &kindError{CodeNotReady, http.StatusServiceUnavailable, "not ready"}
	ErrNotImplemented error = &kindError{CodeNotImplemented, http.StatusNotImplemented, "not implemented"}
	// ErrForbidden: weftd may not do this with its own credentials (e.g.
	// `weft apply` through a weftd whose Kubernetes rights are read-only).
	ErrForbidden error = &kindError{CodeForbidden, http.StatusForbidden, "forbidden"}
)

var kinds = []*kindError{
	ErrBadRequest.(*kindError), ErrNotFound.(*kindError), ErrConflict.(*kindError),
	ErrExhausted.(*kindError), ErrNotReady.(*kindError), ErrNotImplemented.(*kindError),
	ErrForbidden.(*kindError),
}

// FieldError is a bad request naming the field at fault. It matches
// ErrBadRequest.
type FieldError struct {
	Field string // wire name, e.g. "pod_id"
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Unwrap makes errors.Is(err, ErrBadRequest) true.
func (e *FieldError) Unwrap() error { return ErrBadRequest }

// BadRequest returns a *FieldError for field.
func BadRequest(field, msg string) error { return &FieldError{Field: field, Msg: msg} }

// errorBody maps err to the HTTP status and body the server sends.
func errorBody(err error) (int, Error) {
	body := Error{Error: err.Error(), Code: CodeInternal}
	var fe *FieldError
	if errors.As(err, &fe) {
		body.Field = fe.Field
	}
	for _, k := range kinds {
		if errors.Is(err, k) {
			body.Code = k.code
			return k.status, body
		}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		body.Code = CodeTimeout
		return http.StatusGatewayTimeout, body
	}
	return http.StatusInternalServerError, body
}

// RemoteError is an error weftd answered with. errors.Is matches it
// against the sentinel its code names (ErrNotFound, ...).
type RemoteError struct {
	Status int    // HTTP status
	Code   string // Code* constant
	Field  string // for bad requests, the field at fault
	Msg    string
}

func (e *RemoteError) Error() string { return e.Msg }

// Is reports whether target is the sentinel for e's code.
func (e *RemoteError) Is(target error) bool {
	k, ok := target.(*kindError)
	return ok && k.code == e.Code
}
