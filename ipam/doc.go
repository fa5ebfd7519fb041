// Package ipam hands out weft's addresses: node subnets carved out of the
// cluster CIDR (SubnetPool), and pod addresses out of one node subnet
// (Allocator), kept in a durable store on disk.
//
// A node subnet reserves four addresses: the network address, .1 for the
// weft router (the pods' gateway), .2 for the node's own host port, and the
// broadcast address. Pods get the rest, handed out round robin so that a
// freed address waits until the others have had their turn.
//
// The store is one file per allocated address, in the manner of CNI's
// host-local plugin, so that claiming an address is a single atomic
// O_CREAT|O_EXCL and a crash can leak an address but never give it out twice.
// Only IPv4 is supported for now.
package ipam
