package kubecluster

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"
)

// Image is an OCI image of one uncompressed layer, made from files of
// this machine: what `ctr images import` reads, built with no registry
// and no image tool (the layout is a few JSON files and a tar).
type Image struct {
	// Name is the reference the image is imported as
	// (registry.k8s.io/pause:3.10.2): the name the e2e suite and the
	// kubelet ask for, with imagePullPolicy Never or IfNotPresent.
	Name string
	// Files maps a path in the image ("bin/sh") to the file of this
	// machine copied there.
	Files map[string]string
	// Symlinks maps a path in the image to its link target.
	Symlinks map[string]string
	// Entrypoint and Cmd are the image config's.
	Entrypoint, Cmd []string
}

// baseDirs are made in every image: what a container's runtime mounts
// over (dev, proc, sys) and what programs expect to find.
var baseDirs = []string{"dev", "proc", "sys", "etc", "tmp", "root", "var", "run", "bin"}

// passwd lets programs that look up uid 0 or nobody find them.
const passwd = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n"

// Write writes img as an OCI image archive at path (through a temporary
// file, so that a half-written archive is never taken for an image).
func (img Image) Write(path string) error {
	layer, err := img.layer()
	if err != nil {
		return fmt.Errorf("image %s: %w", img.Name, err)
	}
	repo, tag, ok := splitRef(img.Name)
	if !ok {
		return fmt.Errorf("image %q: want REPOSITORY:TAG", img.Name)
	}
	blobs := map[string][]byte{}
	blob := func(b []byte, mediaType string) map[string]any {
		sum := sha256.Sum256(b)
		blobs[hex.EncodeToString(sum[:])] = b
		return map[string]any{"digest": "sha256:" + hex.EncodeToString(sum[:]), "size": len(b), "mediaType": mediaType}
	}
	layerDesc := blob(layer, "application/vnd.oci.image.layer.v1.tar")
	cfg := map[string]any{"Env": []string{"PATH=/usr/local/bin:/usr/bin:/bin"}}
	if img.Entrypoint != nil {
		cfg["Entrypoint"] = img.Entrypoint
	}
	if img.Cmd != nil {
		cfg["Cmd"] = img.Cmd
	}
	config, _ := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH, "os": "linux", "config": cfg,
		"rootfs": map[string]any{"type": "layers", "diff_ids": []any{layerDesc["digest"]}},
	})
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": blob(config, "application/vnd.oci.image.config.v1+json"), "layers": []any{layerDesc},
	})
	mdesc := blob(manifest, "application/vnd.oci.image.manifest.v1+json")
	mdesc["annotations"] = map[string]string{"io.containerd.image.name": repo + ":" + tag, "org.opencontainers.image.ref.name": tag}
	index, _ := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []any{mdesc}})

	var out bytes.Buffer
	w := tar.NewWriter(&out)
	add := func(name string, b []byte) {
		w.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(b)), ModTime: time.Unix(0, 0)})
		w.Write(b)
	}
	add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	add("index.json", index)
	for _, d := range sortedKeys(blobs) {
		add("blobs/sha256/"+d, blobs[d])
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("image %s: %w", img.Name, err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, out.Bytes(), 0o644); err != nil {
		return fmt.Errorf("image %s: %w", img.Name, err)
	}
	return os.Rename(tmp, path)
}

// layer is the image's one layer: base directories, /etc/passwd, the
// files (their parent directories made on the way) and the symlinks.
func (img Image) layer() ([]byte, error) {
	var buf bytes.Buffer
	w := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	made := map[string]bool{}
	mkdir := func(d string) {
		var parts []string
		for _, p := range strings.Split(d, "/") {
			parts = append(parts, p)
			dir := strings.Join(parts, "/")
			if !made[dir] {
				made[dir] = true
				w.WriteHeader(&tar.Header{Name: dir + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: epoch})
			}
		}
	}
	for _, d := range baseDirs {
		mkdir(d)
	}
	w.WriteHeader(&tar.Header{Name: "etc/passwd", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(passwd)), ModTime: epoch})
	w.Write([]byte(passwd))
	for _, dst := range sortedKeys(img.Files) {
		b, err := os.ReadFile(img.Files[dst])
		if err != nil {
			return nil, err
		}
		if d := filepath.Dir(dst); d != "." {
			mkdir(d)
		}
		if err := w.WriteHeader(&tar.Header{Name: dst, Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(b)), ModTime: epoch}); err != nil {
			return nil, err
		}
		w.Write(b)
	}
	for _, dst := range sortedKeys(img.Symlinks) {
		if d := filepath.Dir(dst); d != "." {
			mkdir(d)
		}
		w.WriteHeader(&tar.Header{Name: dst, Typeflag: tar.TypeSymlink, Linkname: img.Symlinks[dst], Mode: 0o777, ModTime: epoch})
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// splitRef splits "registry.k8s.io/pause:3.10.2" into repository and tag
// (a colon in a registry's host:port is not a tag).
func splitRef(ref string) (repo, tag string, ok bool) {
	i := strings.LastIndex(ref, ":")
	if i <= 0 || i == len(ref)-1 || strings.Contains(ref[i:], "/") {
		return "", "", false
	}
	return ref[:i], ref[i+1:], true
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
