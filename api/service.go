package api

import (
	"context"
	"runtime/debug"
)

// Service is what the API needs from a running node; the node implements
// it. Methods are called concurrently from the server's goroutines. ctx is
// the request's: it ends when the client hangs up or the server shuts
// down, so an Attach that must not be left half done should finish its
// work (or undo it) rather than stop halfway. Errors should wrap one of the sentinel errors
// (ErrNotFound, ErrConflict, ErrExhausted, ErrNotReady, ErrBadRequest,
// ErrNotImplemented) when one fits; any other error is answered as a 500.
//
// The server normalizes requests before calling Attach, Detach and Trace
// (see AttachRequest.Normalize): defaults are filled in and required
// fields are present. Slices returned may be empty or nil; the server
// sends both as [].
type Service interface {
	Status(ctx context.Context) (Status, error)
	Ports(ctx context.Context) ([]Port, error)
	// Attach is idempotent per (PodID, IfName): attaching again returns
	// the existing port's description.
	Attach(ctx context.Context, req AttachRequest) (AttachResponse, error)
	// Detach of a port that does not exist returns an error wrapping
	// ErrNotFound.
	Detach(ctx context.Context, req DetachRequest) error
	Peers(ctx context.Context) ([]Peer, error)
	FDB(ctx context.Context) ([]FDBEntry, error)
	Routes(ctx context.Context) ([]Route, error)
	Neighbours(ctx context.Context) ([]Neighbour, error)
	IPAM(ctx context.Context) (IPAM, error)
	Subnets(ctx context.Context) ([]Subnet, error)
	Counters(ctx context.Context) (Counters, error)
	Trace(ctx context.Context, req TraceRequest) (TraceResponse, error)
}

// Version is the version of weft's binaries, set at link time with
// -ldflags "-X github.com/weftnet/weft/api.Version=v1.2.3". When left at
// "dev", BuildVersion falls back to the module version Go recorded.
var Version = "dev"

// BuildVersion returns Version, or the main module's version from the
// build information when Version was not set at link time.
func BuildVersion() string {
	if Version != "dev" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return Version
}
