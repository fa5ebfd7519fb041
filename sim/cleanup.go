package sim

import (
	"errors"
	"os"
	"strconv"
	"strings"

	"github.com/weftnet/weft/netdev"
)

// Down stops every weftd (and the etcd) the record names and deletes every
// namespace of the sim, then the state directory. Running it again, or on
// a sim that crashed half-way up, is fine.
func (c *Cluster) Down() error {
	var errs []error
	for _, n := range c.Nodes {
		if n.PID > 0 && c.ownsProc(n.PID) {
			c.logf("node %s: stopping weftd pid %d", n.Name, n.PID)
			stopPID(n.PID)
		}
	}
	if c.Etcd != nil && c.Etcd.PID > 0 && c.ownsProc(c.Etcd.PID) {
		c.logf("etcd: stopping pid %d", c.Etcd.PID)
		stopPID(c.Etcd.PID)
	}
	// A sim that crashed between starting a daemon and recording its PID
	// leaves one the record does not name; its command line names our
	// state directory.
	for _, pid := range c.unrecordedProcs() {
		c.logf("stopping pid %d (started by this sim, not in its record)", pid)
		stopPID(pid)
	}
	if err := c.downOutside(); err != nil {
		errs = append(errs, err)
	}
	if c.Registry == RegistryKube {
		if err := c.stopKube(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, n := range c.Nodes {
		for _, p := range n.Pods {
			if err := netdev.DeleteNetns(p.Netns); err != nil {
				errs = append(errs, err)
			}
		}
		if err := netdev.DeleteNetns(n.Netns); err != nil {
			errs = append(errs, err)
		}
	}
	if err := netdev.DeleteNetns(c.underlayNS()); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		if err := os.RemoveAll(c.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	c.logf("sim %s down", c.Name)
	return errors.Join(errs...)
}

// strayNamespaces lists namespaces named as this sim's would be.
func (c *Cluster) strayNamespaces() []string { return StrayNamespaces(c.Name) }

// StrayNamespaces lists the namespaces named as those of a sim called name
// would be (name-u, name-o, name-k, name-nI, name-nI-pJ).
func StrayNamespaces(name string) []string {
	ents, err := os.ReadDir(netdev.NetnsDir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		if ownNamespace(name, e.Name()) {
			out = append(out, e.Name())
		}
	}
	return out
}

// ownNamespace reports whether ns has the form of a namespace of the sim
// called name: name-u, name-o, name-k, name-nI or name-nI-pJ.
func ownNamespace(name, ns string) bool {
	rest, ok := strings.CutPrefix(ns, name+"-")
	if !ok {
		return false
	}
	if rest == "u" || rest == "o" || rest == "k" {
		return true
	}
	node, pod, hasPod := strings.Cut(rest, "-")
	num := func(s, p string) bool {
		d, ok := strings.CutPrefix(s, p)
		if !ok || d == "" {
			return false
		}
		_, err := strconv.ParseUint(d, 10, 16)
		return err == nil
	}
	return num(node, "n") && (!hasPod || num(pod, "p"))
}
