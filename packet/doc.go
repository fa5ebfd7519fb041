// Package packet holds header views over byte slices and the checksum
// arithmetic every stage of weft shares.
//
// Everything here works in place on caller-owned buffers: no allocation, no
// interfaces, no copies. Callers check lengths before they read fields; the
// helpers that take a slice assume it is at least as long as the header they
// name (documented per function), so a missing check is a panic in tests, not
// a silent misread.
package packet
