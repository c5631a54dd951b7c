// Package kubeletcfg computes the kubelet's effective eviction settings and where each one
// came from.
//
// It reads, under a host root: the kubelet process's /proc/<pid>/cmdline, the kubelet systemd
// unit (fragment, drop-ins, Environment= and EnvironmentFile=), kubeadm-flags.env,
// /etc/default/kubelet and /etc/sysconfig/kubelet, the --config file and the --config-dir
// drop-ins, and the kubelet's /configz endpoint. Writers for eviction settings live here too;
// they write only through internal/atomicfile.
package kubeletcfg
