//go:build !linux

package bench

import "time"

// threadCPUTime is not available here: figures are wall time only.
func threadCPUTime() (time.Duration, bool) { return 0, false }
