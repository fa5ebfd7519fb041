package file

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/weftnet/weft/registry"
)

// The claim index, DIR/subnets/<addr>_<bits>, holds the name of the node
// that claims each subnet, one file per subnet. It is written when a claim
// is made and removed when the claim ends, both under the claim lock,
// and is the registry's word on who owns a subnet: a node file may be
// truncated, corrupted or forged, but as long as the index names the
// owner, its subnet is neither handed to another node nor advertised by
// another node, and its owner can rewrite its own file. (The etcd backend
// keeps the same index as subnets/<cidr> keys, written in one transaction
// with the claim.)
type claimIndex struct {
	bySubnet map[netip.Prefix]string // "" = claimed by an entry that cannot be read
	byNode   map[string]netip.Prefix
}

// errCorrupt marks a node file that exists but cannot be decoded.
var errCorrupt = errors.New("node file is corrupt")

func claimFileName(p netip.Prefix) string { return p.Addr().String() + "_" + strconv.Itoa(p.Bits()) }

func parseClaimFileName(name string) (netip.Prefix, bool) {
	addr, bits, ok := strings.Cut(name, "_")
	if !ok {
		return netip.Prefix{}, false
	}
	p, err := netip.ParsePrefix(addr + "/" + bits)
	return p, err == nil && p == p.Masked()
}

func (r *Registry) claimPath(p netip.Prefix) string {
	return filepath.Join(r.claimsDir, claimFileName(p))
}

// readClaims reads the index. An entry that cannot be read still claims
// its subnet (for nobody); a node named by two entries keeps the lower
// subnet, and the other is reported.
func (r *Registry) readClaims() (claimIndex, error) {
	idx := newClaimIndex()
	entries, err := os.ReadDir(r.claimsDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return idx, fmt.Errorf("read claim index: %w", err)
	}
	for _, e := range entries {
		p, ok := parseClaimFileName(e.Name())
		if !ok || e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(r.claimsDir, e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue // released meanwhile
		}
		node := strings.TrimSpace(string(b))
		if err == nil {
			err = registry.ValidateNodeName(node)
		}
		if err != nil {
			r.warnOnce(fmt.Errorf("claim index entry %s: %w; the subnet stays claimed", e.Name(), err))
			node = ""
		}
		r.addClaim(&idx, p, node)
	}
	return idx, nil
}

func newClaimIndex() claimIndex {
	return claimIndex{bySubnet: map[netip.Prefix]string{}, byNode: map[string]netip.Prefix{}}
}

// addClaim adds the index entry p -> node ("": unreadable) to idx. A node
// named by two entries keeps the lower subnet, whichever comes first.
func (r *Registry) addClaim(idx *claimIndex, p netip.Prefix, node string) {
	idx.bySubnet[p] = node
	if node == "" {
		return
	}
	if prev, dup := idx.byNode[node]; dup {
		lo, hi := prev, p
		if hi.Addr().Less(lo.Addr()) {
			lo, hi = hi, lo
		}
		r.warnOnce(fmt.Errorf("claim index names %s for both %s and %s; the lower one is its claim", node, lo, hi))
		p = lo
	}
	idx.byNode[node] = p
}

// owns reports whether the index lets node advertise subnet: it names node
// as the subnet's owner, or (a directory from before the index) says
// nothing about either.
func (idx claimIndex) owns(node string, subnet netip.Prefix) bool {
	owner, subnetKnown := idx.bySubnet[subnet]
	claim, nodeKnown := idx.byNode[node]
	switch {
	case subnetKnown && owner != node:
		return false
	case nodeKnown && claim != subnet:
		return false
	}
	return true
}

// writeClaim records node as the owner of p, which the index must not
// name yet: the entry is written to a temporary file, fsynced, and linked
// into place with link(2), which fails with EEXIST rather than replace an
// entry (the claim lock already keeps two claims apart; this keeps a
// writer that ignores it from silently taking a subnet), then the
// directory is fsynced. Must hold the claim lock.
func (r *Registry) writeClaim(p netip.Prefix, node string) error {
	if err := os.MkdirAll(r.claimsDir, 0o755); err != nil {
		return fmt.Errorf("claim index: %w", err)
	}
	tmp, err := os.CreateTemp(r.claimsDir, "."+claimFileName(p)+".tmp-*")
	if err != nil {
		return fmt.Errorf("claim index: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(node + "\n")
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Link(tmp.Name(), r.claimPath(p))
	}
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("claim index: %s is already claimed: %w", p, registry.ErrSubnetConflict)
	}
	if err != nil {
		return fmt.Errorf("claim index: %w", err)
	}
	return syncDir(r.claimsDir)
}

// removeClaim ends node's claim on p, if the index gives p to node. Must
// hold the directory lock.
func (r *Registry) removeClaim(p netip.Prefix, node string) error {
	b, err := os.ReadFile(r.claimPath(p))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("claim index: %w", err)
	}
	if strings.TrimSpace(string(b)) != node {
		return nil
	}
	if err := os.Remove(r.claimPath(p)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("claim index: %w", err)
	}
	return syncDir(r.claimsDir)
}

// badFile is a node file that could not be decoded.
type badFile struct {
	err error
	// subnet is what could still be read of its subnet field, if anything:
	// a truncated file usually still names it.
	subnet netip.Prefix
}

var subnetField = regexp.MustCompile(`"subnet"\s*:\s*"([0-9./]+)"`)

// salvageSubnet finds the subnet field in a file that does not decode.
func salvageSubnet(b []byte) netip.Prefix {
	m := subnetField.FindSubmatch(b)
	if m == nil {
		return netip.Prefix{}
	}
	p, err := netip.ParsePrefix(string(m[1]))
	if err != nil || !p.Addr().Is4() {
		return netip.Prefix{}
	}
	return p.Masked()
}

// indexLegacy adds to the index the claims it lacks that the node files
// still show: records of a directory from before the index, and subnets
// salvaged from unreadable files. A subnet or node the index already knows
// is left as the index says. Must hold the directory lock.
func (r *Registry) indexLegacy(recs map[string]record, bad map[string]badFile, idx *claimIndex) error {
	add := func(node string, p netip.Prefix) error {
		if !p.IsValid() {
			return nil
		}
		if _, ok := idx.byNode[node]; ok {
			return nil
		}
		if _, ok := idx.bySubnet[p]; ok {
			return nil
		}
		if err := r.writeClaim(p, node); err != nil {
			return err
		}
		idx.bySubnet[p], idx.byNode[node] = node, p
		return nil
	}
	for _, node := range slices.Sorted(maps.Keys(recs)) {
		if err := add(node, recs[node].Subnet); err != nil {
			return err
		}
	}
	for _, node := range slices.Sorted(maps.Keys(bad)) {
		if err := add(node, bad[node].subnet); err != nil {
			return err
		}
	}
	return nil
}

// unknownClaims lists the unreadable node files whose subnet neither the
// index nor the file itself tells: any subnet may be theirs.
func unknownClaims(bad map[string]badFile, idx claimIndex) []string {
	var out []string
	for _, node := range slices.Sorted(maps.Keys(bad)) {
		if _, ok := idx.byNode[node]; !ok && !bad[node].subnet.IsValid() {
			out = append(out, node+".json")
		}
	}
	return out
}
