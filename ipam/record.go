package ipam

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
	"unicode/utf8"
)

// recordVersion is the version of the per-address file format written by
// this code. A file of a higher version is not corrupt, just newer: Open
// refuses it rather than leak (and let GC delete) what a newer weft wrote.
const recordVersion = 1

// maxRecordSize bounds what is read from one file; records are ~200 bytes.
const maxRecordSize = 4096

// Limits on key and display fields, so a record always fits maxRecordSize.
const (
	maxKeyField  = 256
	maxMetaField = 253 // a Kubernetes object name's limit
)

var errNewerRecord = errors.New("record written by a newer weft")

// Key identifies an allocation: one pod interface. Allocating the same key
// twice returns the same address.
type Key struct {
	PodID  string
	IfName string
}

// String returns the key as "podID/ifname".
func (k Key) String() string { return k.PodID + "/" + k.IfName }

func (k Key) check() error {
	if err := checkField("pod ID", k.PodID, maxKeyField); err != nil {
		return fmt.Errorf("invalid key %q: %w", k.String(), err)
	}
	if err := checkField("interface name", k.IfName, maxKeyField); err != nil {
		return fmt.Errorf("invalid key %q: %w", k.String(), err)
	}
	return nil
}

// checkField rejects what would not survive the JSON round trip unchanged
// (invalid UTF-8 is rewritten by encoding/json, so a key would stop matching
// itself after a restart) and what would make records unbounded.
func checkField(what, s string, max int) error {
	switch {
	case s == "":
		return fmt.Errorf("%s is empty", what)
	case len(s) > max:
		return fmt.Errorf("%s is %d bytes, more than %d", what, len(s), max)
	case !utf8.ValidString(s):
		return fmt.Errorf("%s is not valid UTF-8", what)
	case strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return fmt.Errorf("%s contains control characters", what)
	}
	return nil
}

// Meta is display information stored alongside an allocation; it plays no
// part in the key.
type Meta struct {
	PodNamespace string
	PodName      string
}

func (m Meta) check() error {
	if m.PodNamespace != "" {
		if err := checkField("pod namespace", m.PodNamespace, maxMetaField); err != nil {
			return err
		}
	}
	if m.PodName != "" {
		if err := checkField("pod name", m.PodName, maxMetaField); err != nil {
			return err
		}
	}
	return nil
}

// record is the content of one address file, one JSON object and a newline.
// Addr repeats the file name so a file copied or renamed by hand is caught.
type record struct {
	Version      int        `json:"v"`
	Addr         netip.Addr `json:"addr"`
	PodID        string     `json:"pod_id"`
	IfName       string     `json:"ifname"`
	Since        time.Time  `json:"since"`
	PodNamespace string     `json:"pod_namespace,omitempty"`
	PodName      string     `json:"pod_name,omitempty"`
}

func (r *record) key() Key { return Key{PodID: r.PodID, IfName: r.IfName} }

func encodeRecord(r *record) ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode record for %s: %w", r.Addr, err)
	}
	return append(b, '\n'), nil
}

// parseRecord decodes and checks one address file. Any error other than
// errNewerRecord means the file is damaged: the caller keeps the address
// reserved (leaked) until GC reclaims it.
func parseRecord(data []byte) (record, error) {
	var r record
	if len(data) == 0 {
		return r, errors.New("empty record")
	}
	if len(data) > maxRecordSize {
		return r, fmt.Errorf("record is %d bytes, more than %d", len(data), maxRecordSize)
	}
	if data[len(data)-1] != '\n' {
		// Every record is written with its newline in one write: without
		// it the write did not finish.
		return r, errors.New("record is truncated (no final newline)")
	}
	// Peek at the version first so a newer format with other fields is
	// reported as newer, not as corrupt.
	var v struct {
		Version int `json:"v"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return r, fmt.Errorf("decode record: %w", err)
	}
	if v.Version > recordVersion {
		return r, fmt.Errorf("%w (version %d, this one reads %d)", errNewerRecord, v.Version, recordVersion)
	}
	if v.Version != recordVersion {
		return r, fmt.Errorf("record version %d is not %d", v.Version, recordVersion)
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return r, fmt.Errorf("decode record: %w", err)
	}
	if !r.Addr.Is4() {
		return r, fmt.Errorf("record address %s is not IPv4", r.Addr)
	}
	if err := r.key().check(); err != nil {
		return r, err
	}
	if r.Since.IsZero() {
		return r, errors.New("record has no since time")
	}
	if err := (Meta{r.PodNamespace, r.PodName}).check(); err != nil {
		return r, err
	}
	return r, nil
}
