package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"runtime"
	"testing"
	"time"
)

// busyboxImage writes an OCI image archive (what `ctr images import`
// reads) holding a static busybox with a few applets and cmd as its
// command, named name. No registry and no image tool are needed: the
// layout is a handful of JSON files and one uncompressed layer.
func busyboxImage(t *testing.T, path, name string, cmd []string) {
	t.Helper()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("busybox (Debian package busybox-static): %v", err)
	}
	var layer bytes.Buffer
	lw := tar.NewWriter(&layer)
	now := time.Unix(0, 0)
	for _, d := range []string{"bin/", "dev/", "proc/", "sys/", "etc/", "tmp/", "root/"} {
		lw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: now})
	}
	lw.WriteHeader(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bb)), ModTime: now})
	lw.Write(bb)
	for _, applet := range []string{"sh", "sleep", "ip", "ping", "cat", "ls"} {
		lw.WriteHeader(&tar.Header{Name: "bin/" + applet, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777, ModTime: now})
	}
	if err := lw.Close(); err != nil {
		t.Fatal(err)
	}

	blobs := map[string][]byte{}
	blob := func(b []byte) map[string]any {
		sum := sha256.Sum256(b)
		d := "sha256:" + hex.EncodeToString(sum[:])
		blobs[hex.EncodeToString(sum[:])] = b
		return map[string]any{"digest": d, "size": len(b)}
	}
	mustJSON := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	layerDesc := blob(layer.Bytes())
	layerDesc["mediaType"] = "application/vnd.oci.image.layer.v1.tar"
	configDesc := blob(mustJSON(map[string]any{
		"architecture": runtime.GOARCH, "os": "linux",
		"config": map[string]any{"Cmd": cmd, "Env": []string{"PATH=/bin"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layerDesc["digest"].(string)}},
	}))
	configDesc["mediaType"] = "application/vnd.oci.image.config.v1+json"
	manifestDesc := blob(mustJSON(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": configDesc, "layers": []any{layerDesc},
	}))
	manifestDesc["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
	manifestDesc["annotations"] = map[string]string{"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "latest"}
	index := mustJSON(map[string]any{"schemaVersion": 2, "manifests": []any{manifestDesc}})

	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := tar.NewWriter(f)
	file := func(name string, b []byte) {
		w.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(b)), ModTime: now})
		w.Write(b)
	}
	file("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	file("index.json", index)
	for hexsum, b := range blobs {
		file("blobs/sha256/"+hexsum, b)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}
