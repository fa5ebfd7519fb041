// Command weft-cni is weft's CNI plugin. A container runtime (containerd,
// CRI-O, the kubelet through them, or cnitool) runs it for every pod
// sandbox; it asks the node's weftd, over weftd's API socket, to attach or
// detach the pod's interface, and reports the result in the CNI format.
// weftd does the work (address, TAP device, switch port); the plugin holds
// no state of its own except releases recorded while weftd is down.
//
// It speaks CNI spec 0.4.0, 1.0.0 and 1.1.0 and every verb: ADD, DEL,
// CHECK, VERSION, GC and STATUS. See docs/CNI.md.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/weftnet/weft/api"
)

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:    cmdAdd,
		Del:    cmdDel,
		Check:  cmdCheck,
		GC:     cmdGC,
		Status: cmdStatus,
	}, version.PluginSupports(supportedVersions...), "weft-cni "+api.BuildVersion()+": attaches pods to weftd, the weft node daemon")
}
