package registry

import "time"

// ForeignTTL is the lease time of a foreign node: a node that runs no
// weftd (a Linux kernel VXLAN device set up as flannel does) and that an
// operator registers with `weft node add`. Nothing on that node can renew
// a lease, so its lease is a record that does not expire in practice: ten
// years, well inside etcd's limit on lease TTLs (9e9 s). It ends only by
// `weft node remove` (Release), never by a weftd's crash, restart or
// removal. The alternative, every weftd renewing every foreign lease, would
// need a renewal by a client other than the one that acquired (which both
// backends refuse, on purpose: ErrLeaseLost) or a re-acquire by each
// weftd, which races with `weft node remove` and could claim a removed
// node's subnet again. The subnet still comes from the pool, as for any
// node, and the claim follows the usual rules.
const ForeignTTL = 10 * 365 * 24 * time.Hour
