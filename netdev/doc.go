// Package netdev holds weft's Linux devices and the kernel plumbing around
// them: TAP devices (plain through songgao/water, or with the virtio-net
// header and offloads through golang.org/x/sys/unix), network namespaces,
// veth pairs, addresses and routes (netlink), and an in-memory Device pair
// for tests of other packages.
//
// Every device implements Device, the batch shape the daemon's workers use.
// A TAP may live in another network namespace: the kernel puts a TAP in the
// namespace of the thread that opens /dev/net/tun, so CreateTap and OpenTap
// open it on a locked OS thread switched into that namespace, and configure
// the link through a netlink handle bound to the namespace. The file
// descriptor works from any thread afterwards.
package netdev
