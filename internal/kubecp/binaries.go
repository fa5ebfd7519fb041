package kubecp

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// ToolsEnv names the environment variable holding the directory of the
// tools `make tools` builds (bin/tools): etcd, kube-apiserver,
// kube-controller-manager. `make test` sets it.
const ToolsEnv = "WEFT_TOOLS"

// Binaries are the control plane's executables.
type Binaries struct {
	Etcd, APIServer, ControllerManager string
}

// FindBinaries looks for the binaries in $WEFT_TOOLS, or, when it is
// unset, in bin/tools of the module the working directory is in (a plain
// `go test` after `make tools`); $WEFT_ETCD (the variable etcdtest reads)
// names etcd if set. Check says whether they are there.
func FindBinaries() Binaries {
	dir := os.Getenv(ToolsEnv)
	if dir == "" {
		dir = moduleTools()
	}
	b := Binaries{
		Etcd:              filepath.Join(dir, "etcd"),
		APIServer:         filepath.Join(dir, "kube-apiserver"),
		ControllerManager: filepath.Join(dir, "kube-controller-manager"),
	}
	if e := os.Getenv("WEFT_ETCD"); e != "" {
		b.Etcd = e
	}
	return b
}

// moduleTools is bin/tools of the nearest directory upwards holding
// go.mod, or "" if there is none.
func moduleTools() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "bin", "tools")
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// Check reports every missing or non-executable binary in one error.
func (b Binaries) Check(controllerManager bool) error {
	need := []string{b.Etcd, b.APIServer}
	if controllerManager {
		need = append(need, b.ControllerManager)
	}
	var errs []error
	for _, p := range need {
		st, err := os.Stat(p)
		switch {
		case p == "" || !filepath.IsAbs(p):
			err = fmt.Errorf("%q: not an absolute path", p)
		case err != nil:
		case st.IsDir() || st.Mode()&0o111 == 0:
			err = fmt.Errorf("%s: not an executable file", p)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("control plane binaries missing (`make tools` builds them into bin/tools; $%s names the directory): %w",
			ToolsEnv, errors.Join(errs...))
	}
	return nil
}
