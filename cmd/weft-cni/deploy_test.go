package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"gopkg.in/yaml.v3"

	"github.com/weftnet/weft/api"
)

// The deploy files are not run here (no Kubernetes, no docker, no
// systemd); these tests keep them consistent with the plugin and with
// each other.

const repoRoot = "../.."

func readRepoFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, path))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// pluginConf is what a runtime hands the first plugin of list: the plugin's
// own object plus the list's name and version.
func pluginConf(t *testing.T, list *libcni.NetworkConfigList) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(list.Plugins[0].Bytes, &m); err != nil {
		t.Fatal(err)
	}
	m["name"], m["cniVersion"] = list.Name, list.CNIVersion
	b, _ := json.Marshal(m)
	return b
}

func TestDeployConflist(t *testing.T) {
	list, err := libcni.ConfListFromBytes(readRepoFile(t, "deploy/10-weft.conflist"))
	if err != nil {
		t.Fatal(err)
	}
	// A runtime with a current libcni picks 1.1.0 from cniVersions (and so
	// calls GC and STATUS); containerd 1.6/1.7, whose libcni rejects 1.1.0
	// results, read cniVersion 1.0.0 (TestContainerdCRI runs this file).
	if list.Name != "weft" || list.CNIVersion != "1.1.0" || len(list.Plugins) != 1 || list.Plugins[0].Network.Type != "weft-cni" {
		t.Fatalf("conflist: name %q version %q plugins %d", list.Name, list.CNIVersion, len(list.Plugins))
	}
	var raw struct {
		CNIVersion string `json:"cniVersion"`
	}
	json.Unmarshal(readRepoFile(t, "deploy/10-weft.conflist"), &raw)
	if raw.CNIVersion != "1.0.0" {
		t.Errorf("cniVersion %q: older runtimes need 1.0.0 there", raw.CNIVersion)
	}
	conf, err := loadConf(pluginConf(t, list))
	if err != nil {
		t.Fatalf("the shipped config does not load: %v", err)
	}
	if conf.Socket != api.DefaultSocket || conf.PendingDir != defaultPendingDir {
		t.Errorf("socket %q pendingDir %q; want weftd's defaults %q and %q", conf.Socket, conf.PendingDir, api.DefaultSocket, defaultPendingDir)
	}
}

// k8sObject is the little of a Kubernetes object these checks read.
type k8sObject struct {
	Kind     string
	Metadata struct{ Name, Namespace string }
	Data     map[string]string
	Spec     struct {
		Template struct {
			Spec podSpec
		}
	}
}

type podSpec struct {
	HostNetwork        bool   `yaml:"hostNetwork"`
	ServiceAccountName string `yaml:"serviceAccountName"`
	Tolerations        []map[string]any
	InitContainers     []container `yaml:"initContainers"`
	Containers         []container
	Volumes            []struct {
		Name     string
		HostPath *struct{ Path string } `yaml:"hostPath"`
	}
}

type container struct {
	Name, Image     string
	Command         []string
	SecurityContext struct{ Privileged bool } `yaml:"securityContext"`
	Env             []envVar
	VolumeMounts    []struct {
		Name             string
		MountPath        string `yaml:"mountPath"`
		MountPropagation string `yaml:"mountPropagation"`
	} `yaml:"volumeMounts"`
}

type envVar struct {
	Name      string
	ValueFrom struct {
		FieldRef struct {
			FieldPath string `yaml:"fieldPath"`
		} `yaml:"fieldRef"`
	} `yaml:"valueFrom"`
}

func TestDeployDaemonSet(t *testing.T) {
	dec := yaml.NewDecoder(bytes.NewReader(readRepoFile(t, "deploy/weft.yaml")))
	objs := map[string]k8sObject{}
	for {
		var o k8sObject
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("weft.yaml: %v", err)
		}
		objs[o.Kind] = o
	}
	for _, kind := range []string{"Namespace", "ServiceAccount", "ConfigMap", "DaemonSet"} {
		if _, ok := objs[kind]; !ok {
			t.Errorf("weft.yaml has no %s", kind)
		}
	}

	// The conflist the init container installs is the shipped one.
	var inCM, shipped any
	if err := json.Unmarshal([]byte(objs["ConfigMap"].Data["10-weft.conflist"]), &inCM); err != nil {
		t.Fatalf("ConfigMap 10-weft.conflist: %v", err)
	}
	json.Unmarshal(readRepoFile(t, "deploy/10-weft.conflist"), &shipped)
	if !reflect.DeepEqual(inCM, shipped) {
		t.Errorf("ConfigMap's conflist differs from deploy/10-weft.conflist:\n%v\n%v", inCM, shipped)
	}
	var weftd struct {
		Socket   string `yaml:"socket"`
		StateDir string `yaml:"state_dir"`
	}
	if err := yaml.Unmarshal([]byte(objs["ConfigMap"].Data["weftd.yaml"]), &weftd); err != nil {
		t.Fatalf("ConfigMap weftd.yaml: %v", err)
	}
	if weftd.Socket != api.DefaultSocket || filepath.Join(weftd.StateDir, "cni-pending") != defaultPendingDir {
		t.Errorf("weftd.yaml socket %q state_dir %q do not match the plugin's %s and %s", weftd.Socket, weftd.StateDir, api.DefaultSocket, defaultPendingDir)
	}

	ds := objs["DaemonSet"].Spec.Template.Spec
	if !ds.HostNetwork || ds.ServiceAccountName != objs["ServiceAccount"].Metadata.Name {
		t.Errorf("DaemonSet: hostNetwork %v, serviceAccountName %q", ds.HostNetwork, ds.ServiceAccountName)
	}
	if !slices.ContainsFunc(ds.Tolerations, func(tl map[string]any) bool {
		return tl["operator"] == "Exists" && tl["key"] == nil && tl["effect"] == nil
	}) {
		t.Errorf("DaemonSet does not tolerate every taint: %v", ds.Tolerations)
	}
	hostPaths := map[string]string{} // volume name -> host path
	for _, v := range ds.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	mounted := func(c container) map[string]string { // host path -> mount path
		m := map[string]string{}
		for _, vm := range c.VolumeMounts {
			if hp, ok := hostPaths[vm.Name]; ok {
				m[hp] = vm.MountPath + "|" + vm.MountPropagation
			}
		}
		return m
	}
	if len(ds.Containers) != 1 || len(ds.InitContainers) != 1 {
		t.Fatalf("want one container and one init container, got %d and %d", len(ds.Containers), len(ds.InitContainers))
	}
	d := ds.Containers[0]
	if !d.SecurityContext.Privileged {
		t.Error("weftd is not privileged")
	}
	if !slices.Contains(d.Command, "--node-name=$(NODE_NAME)") ||
		!slices.ContainsFunc(d.Env, func(e envVar) bool {
			return e.Name == "NODE_NAME" && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName"
		}) {
		t.Errorf("weftd does not get its node name from spec.nodeName: %v %v", d.Command, d.Env)
	}
	dm := mounted(d)
	for hp, want := range map[string]string{
		"/run/weft":      "/run/weft|",
		"/var/lib/weft":  "/var/lib/weft|",
		"/var/run/netns": "/var/run/netns|HostToContainer",
	} {
		if dm[hp] != want {
			t.Errorf("weftd mounts host %s as %q, want %q", hp, dm[hp], want)
		}
	}
	ic := ds.InitContainers[0]
	im := mounted(ic)
	script := strings.Join(ic.Command, " ")
	for hp, dst := range map[string]string{"/opt/cni/bin": "weft-cni", "/etc/cni/net.d": "10-weft.conflist"} {
		mp, _, _ := strings.Cut(im[hp], "|")
		if mp == "" || !strings.Contains(script, "mv -f "+mp+"/.") || !strings.Contains(script, mp+"/"+dst) {
			t.Errorf("init container does not install %s into host %s (mounted at %q): %s", dst, hp, mp, script)
		}
	}
	if d.Image != ic.Image {
		t.Errorf("weftd image %q and install-cni image %q differ", d.Image, ic.Image)
	}
}

func TestDeploySystemdUnit(t *testing.T) {
	unit := string(readRepoFile(t, "deploy/weftd.service"))
	for _, want := range []string{
		"ExecStart=/usr/local/bin/weftd --config /etc/weft/weftd.yaml",
		"RuntimeDirectory=weft", // /run/weft: the socket's directory
		"StateDirectory=weft",   // /var/lib/weft: state and cni-pending
		"Restart=always",
		"WantedBy=multi-user.target",
	} {
		if !strings.Contains(unit, "\n"+want+"\n") {
			t.Errorf("weftd.service lacks the line %q", want)
		}
	}
}

// shippedConflist is deploy/10-weft.conflist pointed at socket and
// pendingDir, for the tests that run it through real runtimes.
func shippedConflist(t *testing.T, socket, pendingDir string) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(readRepoFile(t, "deploy/10-weft.conflist"), &m); err != nil {
		t.Fatal(err)
	}
	p := m["plugins"].([]any)[0].(map[string]any)
	p["socket"], p["pendingDir"] = socket, pendingDir
	b, _ := json.Marshal(m)
	return b
}

// TestDockerfile: the image builds the three commands, and every file the
// Dockerfile copies from the repository exists.
func TestDockerfile(t *testing.T) {
	df := readRepoFile(t, "Dockerfile")
	var build string
	sc := bufio.NewScanner(bytes.NewReader(df))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.Contains(line, "go build") || strings.HasPrefix(line, "-o ") {
			build += line + " "
		}
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "COPY" || strings.HasPrefix(f[1], "--from") {
			continue
		}
		for _, src := range f[1 : len(f)-1] {
			if src == "." {
				continue
			}
			if _, err := os.Stat(filepath.Join(repoRoot, src)); err != nil {
				t.Errorf("Dockerfile copies %s: %v", src, err)
			}
		}
	}
	for _, cmd := range []string{"./cmd/weftd", "./cmd/weft", "./cmd/weft-cni"} {
		if !strings.Contains(build, cmd+" ") && !strings.HasSuffix(strings.TrimSpace(build), cmd) {
			t.Errorf("Dockerfile does not build %s: %q", cmd, build)
		}
	}
}
