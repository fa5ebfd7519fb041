// Package node is one running weft node: it acquires the node's lease and
// subnet from the registry, opens the host port and the pod TAPs, the
// underlay socket, and runs the workers that move frames between them
// through the switch pipeline. It owns port records and their lifecycle
// across daemon restarts.
package node
