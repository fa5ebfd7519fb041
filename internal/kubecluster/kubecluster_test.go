package kubecluster

import (
	"archive/tar"
	"encoding/json"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestSplitRef(t *testing.T) {
	for _, tc := range []struct {
		ref, repo, tag string
		ok             bool
	}{
		{"registry.k8s.io/pause:3.10.2", "registry.k8s.io/pause", "3.10.2", true},
		{"localhost:5000/x:1", "localhost:5000/x", "1", true},
		{"localhost:5000/x", "", "", false},
		{"nopath", "", "", false},
		{"x:", "", "", false},
	} {
		repo, tag, ok := splitRef(tc.ref)
		if repo != tc.repo || tag != tc.tag || ok != tc.ok {
			t.Errorf("splitRef(%q) = %q %q %v, want %q %q %v", tc.ref, repo, tag, ok, tc.repo, tc.tag, tc.ok)
		}
	}
}

func TestParseLdd(t *testing.T) {
	out := "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n"
	got := parseLdd([]byte(out))
	want := []string{"/lib/x86_64-linux-gnu/libz.so.1", "/lib64/ld-linux-x86-64.so.2"}
	if !slices.Equal(got, want) {
		t.Errorf("parseLdd = %q, want %q", got, want)
	}
}

// TestImageWrite: the archive is an OCI layout whose index names the
// image and whose layer holds the files, links and base directories.
func TestImageWrite(t *testing.T) {
	dir := t.TempDir()
	prog := filepath.Join(dir, "prog")
	os.WriteFile(prog, []byte("#!/bin/sh\n"), 0o755)
	img := Image{Name: "example.org/x/y:1.0", Files: map[string]string{"usr/bin/prog": prog},
		Symlinks: map[string]string{"bin/p": "/usr/bin/prog"}, Entrypoint: []string{"/usr/bin/prog"}}
	path := filepath.Join(dir, ImageFile(img.Name))
	if err := img.Write(path); err != nil {
		t.Fatal(err)
	}
	if filepath.Base(path) != "example.org_x_y_1.0.tar" {
		t.Errorf("ImageFile = %s", filepath.Base(path))
	}
	files := readTar(t, path)
	var index struct {
		Manifests []struct {
			Digest      string
			Annotations map[string]string
		}
	}
	if err := json.Unmarshal(files["index.json"], &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("index.json %s: %v", files["index.json"], err)
	}
	if got := index.Manifests[0].Annotations["io.containerd.image.name"]; got != img.Name {
		t.Errorf("image name %q, want %q", got, img.Name)
	}
	var manifest struct{ Layers []struct{ Digest string } }
	json.Unmarshal(files["blobs/sha256/"+strings.TrimPrefix(index.Manifests[0].Digest, "sha256:")], &manifest)
	if len(manifest.Layers) != 1 {
		t.Fatalf("manifest has %d layers, want 1", len(manifest.Layers))
	}
	layerPath := filepath.Join(dir, "layer.tar")
	os.WriteFile(layerPath, files["blobs/sha256/"+strings.TrimPrefix(manifest.Layers[0].Digest, "sha256:")], 0o644)
	layer := readTar(t, layerPath)
	for _, want := range []string{"usr/bin/prog", "bin/p", "etc/passwd", "proc/", "usr/"} {
		if _, ok := layer[want]; !ok {
			t.Errorf("layer lacks %s (has %v)", want, slices.Sorted(mapsKeys(layer)))
		}
	}
}

func readTar(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]byte{}
	r := tar.NewReader(f)
	for {
		h, err := r.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(r)
		out[h.Name] = b
	}
}

func mapsKeys(m map[string][]byte) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// TestNodeConfigs: the files carry the node's paths and the settings this
// machine needs.
func TestNodeConfigs(t *testing.T) {
	p := newNodePaths("/var/lib/kl-kube/kl-n1")
	kc, err := kubeletConfig(p, "/kl-n1", netip.MustParseAddr("192.168.60.11"), ClusterDNS)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal([]byte(kc), &cfg); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"failCgroupV1": false, "cgroupRoot": "/kl-n1", "cgroupDriver": "cgroupfs",
		"address": "192.168.60.11", "containerRuntimeEndpoint": "unix:///var/lib/kl-kube/kl-n1/containerd/containerd.sock"} {
		if cfg[k] != want {
			t.Errorf("kubelet config %s = %v, want %v", k, cfg[k], want)
		}
	}
	ctd := containerdConfig(p)
	for _, want := range []string{`restrict_oom_score_adj = true`, `netns_mounts_under_state_dir = true`, `SystemdCgroup = false`,
		`sandbox_image = "` + PauseImage + `"`, `bin_dir = "/var/lib/kl-kube/kl-n1/cni/bin"`} {
		if !strings.Contains(ctd, want) {
			t.Errorf("containerd config lacks %s", want)
		}
	}
	var cl struct{ Plugins []map[string]any }
	if err := json.Unmarshal([]byte(conflist(p)), &cl); err != nil || len(cl.Plugins) != 1 || cl.Plugins[0]["socket"] != p.WeftdSock {
		t.Errorf("conflist %s: %v", conflist(p), err)
	}
	if got := cgroupName("kl", "kl-n1"); got != "/kl-n1" {
		t.Errorf("cgroupName = %s, want /kl-n1", got)
	}
}

func TestParseShimSockets(t *testing.T) {
	listing := "Num       RefCount Protocol Flags    Type St Inode Path\n" +
		"0000000000000000: 00000002 00000000 00010000 0001 01 41 /run/containerd/s/abc\n" +
		"0000000000000000: 00000003 00000000 00000000 0001 03 42 /run/containerd/s/abc\n" +
		"0000000000000000: 00000002 00000000 00010000 0001 01 43 /var/lib/kl-kube/kl-n1/containerd/containerd.sock\n" +
		"0000000000000000: 00000002 00000000 00000000 0002 01 44\n"
	got := parseShimSockets([]byte(listing))
	if want := []string{"/run/containerd/s/abc"}; !slices.Equal(got, want) {
		t.Errorf("parseShimSockets = %q, want %q", got, want)
	}
}

// TestRemoveLogLinks: only the links into the cluster's directories go.
func TestRemoveLogLinks(t *testing.T) {
	logDir, ours, theirs := t.TempDir(), t.TempDir(), t.TempDir()
	os.Symlink(filepath.Join(ours, "pods/x/0.log"), filepath.Join(logDir, "ours.log"))
	os.Symlink(filepath.Join(theirs, "pods/y/0.log"), filepath.Join(logDir, "theirs.log"))
	os.WriteFile(filepath.Join(logDir, "plain.log"), nil, 0o644)
	removeLogLinks(logDir, []string{ours})
	ents, _ := os.ReadDir(logDir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if want := []string{"plain.log", "theirs.log"}; !slices.Equal(names, want) {
		t.Errorf("left %q, want %q", names, want)
	}
}
