// Package e2e holds end-to-end tests that run evictguard against real node components
// (tmpfs filesystems, a sandboxed systemd over D-Bus, dockerd, containerd, etcd,
// kube-apiserver, kubelet, Prometheus and Alertmanager) started by e2e/harness.
package e2e
