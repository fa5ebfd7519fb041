// Command etcd is a real etcd server built from the Go module proxy: a
// one-line main around go.etcd.io/etcd/server/v3/etcdmain, the package the
// upstream etcd binary's own main calls. Its own module, so weft's go.mod
// never pulls in the etcd server. The version is the one go.mod requires;
// `make tools` builds it into the tool cache (tools/gobuild.sh).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
