// Package kubecluster brings up a real Kubernetes cluster on one machine
// with weft as its pod network, for Kubernetes' own e2e suite (make
// e2e-k8s): a control plane in a namespace of its own (internal/kubecp:
// etcd, kube-apiserver, kube-controller-manager), kube-scheduler beside
// it, and per node
// a namespace running containerd (CRI), a kubelet and weftd in kube mode,
// with weft-cni as the CNI plugin; CoreDNS serves cluster DNS behind the
// kube-dns Service. Binaries come from make e2e-tools; the images are OCI
// archives built from binaries of this machine (WriteImages) and imported
// without a registry.
//
// Everything it makes carries the cluster's name (default "kl"):
// namespaces <name>-cp (the control plane), <name>-u (the underlay
// bridge, which the control plane joins at .1) and <name>-n1..., cgroup roots /<name>-n1... in every hierarchy,
// and the directory /var/lib/<name>-kube, which holds a record of what was
// made. Down (and Up, before starting, after a crashed run) sweeps by that
// record: processes whose command line names the cluster's directories
// (by PID), what is left in its cgroups, the mounts below its
// directories, its namespaces, the kubelets' log links, the directories.
//
// The settings (containerd's config, the KubeletConfiguration) are those
// shared/notes/kubernetes.md found to work on a cgroups v1 machine without
// systemd and without CAP_SYS_RESOURCE.
package kubecluster
