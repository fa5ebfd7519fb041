package kubecluster

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// The images the cluster and the e2e suite run, with the names the suite
// asks for (k8s.io/kubernetes test/utils/image/manifest.go at v1.37.2).
const (
	PauseImage   = "registry.k8s.io/pause:3.10.2"
	AgnhostImage = "registry.k8s.io/e2e-test-images/agnhost:2.66.1"
	BusyboxImage = "registry.k8s.io/e2e-test-images/busybox:1.37.0-2"
	CoreDNSImage = "registry.k8s.io/coredns/coredns:v1.15.0"
)

// ImageInputs are the programs the images are made of.
type ImageInputs struct {
	// Pause is a static pause (k8s.io/kubernetes build/pause/linux/pause.c
	// built with gcc -static).
	Pause string
	// Agnhost and CoreDNS are the static Go binaries.
	Agnhost, CoreDNS string
	// Busybox (busybox-static), Dash, Netcat (netcat-openbsd) and Curl are
	// Debian's: the e2e suite runs `sh -c` scripts with UDP `nc -u` and
	// `curl` in agnhost containers, and Debian's busybox sh prefers its
	// own applets (its nc has no -u), so /bin/sh is dash and /bin/nc
	// OpenBSD's. Curl is dynamic: its libraries are copied beside it.
	Busybox, Dash, Netcat, Curl string
}

// DefaultImageInputs finds the Debian programs at their packages' paths
// and the others in tools.
func DefaultImageInputs(tools string) ImageInputs {
	return ImageInputs{
		Pause: filepath.Join(tools, "pause"), Agnhost: filepath.Join(tools, "agnhost"), CoreDNS: filepath.Join(tools, "coredns"),
		Busybox: "/bin/busybox", Dash: "/usr/bin/dash", Netcat: "/usr/bin/nc.openbsd", Curl: "/usr/bin/curl",
	}
}

// ImageFile is the archive name of the image ref in an images directory
// ("registry.k8s.io_pause_3.10.2.tar").
func ImageFile(ref string) string {
	return strings.NewReplacer("/", "_", ":", "_").Replace(ref) + ".tar"
}

// Images returns the recipes of every image the cluster imports.
func Images(in ImageInputs) ([]Image, error) {
	applets, err := busyboxApplets(in.Busybox)
	if err != nil {
		return nil, err
	}
	bbLinks := func(skip ...string) map[string]string {
		m := map[string]string{}
		for _, a := range applets {
			if a != "busybox" && !contains(skip, a) {
				m["bin/"+a] = "busybox"
			}
		}
		return m
	}
	agnFiles := map[string]string{"agnhost": in.Agnhost, "bin/busybox": in.Busybox, "bin/sh": in.Dash,
		"bin/nc": in.Netcat, "usr/bin/curl": in.Curl}
	for _, prog := range []string{in.Dash, in.Netcat, in.Curl} {
		libs, err := sharedLibs(prog)
		if err != nil {
			return nil, err
		}
		for _, lib := range libs {
			agnFiles[strings.TrimPrefix(lib, "/")] = lib
		}
	}
	return []Image{
		{Name: PauseImage, Files: map[string]string{"pause": in.Pause}, Entrypoint: []string{"/pause"}},
		{Name: BusyboxImage, Files: map[string]string{"bin/busybox": in.Busybox}, Symlinks: bbLinks(), Cmd: []string{"sh"}},
		{Name: AgnhostImage, Files: agnFiles, Symlinks: bbLinks("sh", "nc"), Entrypoint: []string{"/agnhost"},
			// As upstream's image: a pod giving no args (the HostPort spec's
			// hostNetwork exec pod) runs `agnhost pause`, not agnhost's usage.
			Cmd: []string{"pause"}},
		{Name: CoreDNSImage, Files: map[string]string{"coredns": in.CoreDNS}, Entrypoint: []string{"/coredns"}},
	}, nil
}

// WriteImages writes every image into dir (ImageFile names) and returns
// the archives' paths. An archive is rewritten only when its recipe (the
// Image and the size and time of each file in it) differs from the one it
// was written from, recorded beside it (.recipe).
func WriteImages(dir string, in ImageInputs) ([]string, error) {
	imgs, err := Images(in)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var paths []string
	for _, img := range imgs {
		p := filepath.Join(dir, ImageFile(img.Name))
		recipe, err := img.recipe()
		if err != nil {
			return nil, err
		}
		if old, err := os.ReadFile(p + ".recipe"); err != nil || !bytes.Equal(old, recipe) {
			if err := img.Write(p); err != nil {
				return nil, err
			}
			if err := os.WriteFile(p+".recipe", recipe, 0o644); err != nil {
				return nil, err
			}
		}
		paths = append(paths, p)
	}
	return paths, nil
}

// recipe is what the image is made of: itself and its files' sizes and
// modification times.
func (img Image) recipe() ([]byte, error) {
	stamps := map[string]string{}
	for _, src := range img.Files {
		st, err := os.Stat(src)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", img.Name, err)
		}
		stamps[src] = fmt.Sprintf("%d %d", st.Size(), st.ModTime().UnixNano())
	}
	return json.Marshal(struct {
		Image  Image
		Stamps map[string]string
	}{img, stamps})
}

func busyboxApplets(bb string) ([]string, error) {
	out, err := exec.Command(bb, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list (Debian package busybox-static): %w", bb, err)
	}
	return strings.Fields(string(out)), nil
}

// sharedLibs lists the libraries ldd resolves for bin, the dynamic
// loader included.
func sharedLibs(bin string) ([]string, error) {
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w", bin, err)
	}
	return parseLdd(out), nil
}

// parseLdd takes the absolute paths out of ldd's output: "libz.so.1 =>
// /lib/.../libz.so.1 (0x...)" and "/lib64/ld-linux-x86-64.so.2 (0x...)".
func parseLdd(out []byte) []string {
	var libs []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		for _, f := range strings.Fields(sc.Text()) {
			if strings.HasPrefix(f, "/") {
				libs = append(libs, f)
				break
			}
		}
	}
	return libs
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
