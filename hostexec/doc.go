// Package hostexec runs evictguard's operations that change the node on the host itself, as
// transient systemd units, rather than in the process (or the container) that decided them.
//
// Why: the DaemonSet's container runs on the container runtime a data-root migration stops,
// and a pod can be killed at any time (eviction, rollout, OOM). An operation started as its
// own unit in system.slice survives its starter: it runs in the host's mount namespace (so a
// copy sees the host's mounts, never the container's) and outside the runtime's cgroup. The
// starter follows the unit and the journal, and a later starter adopts a running operation by
// its unit name (evictguard-op-<operation id>.service), which also makes a second start of the
// same operation fail. docs/remediation.md ("Where the work runs") tells the whole story.
//
// On the host it writes, under the state directory: bin/evictguard-<sha256 prefix>, a copy of
// the running binary checked by digest (the unit must not depend on the container's
// filesystem); ops/<operation id>/output.log, what the unit prints; and, when the starter lends
// the unit its API credentials, ops/<operation id>/kubeconfig and token (mode 0600, removed
// when the operation ends). It starts and reads units over the systemd manager's D-Bus API.
package hostexec
