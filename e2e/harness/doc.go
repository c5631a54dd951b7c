// Package harness starts real node components for end-to-end tests — tmpfs filesystems, a
// sandboxed systemd manager over D-Bus, dockerd, containerd, etcd, kube-apiserver, the kubelet,
// Prometheus and Alertmanager — waits until each is ready, and always tears them down.
//
// Everything it creates lives under BaseDir (processes, logs, mounts), binds to 127.0.0.1 on
// ports chosen at run time, and is registered with t.Cleanup. Child processes get
// PDEATHSIG=SIGKILL so an interrupted test binary does not leave them running, and Sweep
// removes what an interrupted earlier run left behind (hack/test.sh calls it first).
//
// A component that is missing, or a test run without root, skips with a clear reason — unless
// EVICTGUARD_E2E_STRICT=1 (set by the CI test command), where the same condition fails the test:
// CI must run everything.
package harness
