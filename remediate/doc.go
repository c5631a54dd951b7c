// Package remediate decides and carries out the threshold rewrite: the planner (which
// thresholds to lower, and whether a data-root migration is the better action), the policy
// gates (maintenance windows, cooldown, restart budget, kubelet uptime, Alertmanager and pod
// blockers), and the executor that rewrites the kubelet's eviction settings, restarts the
// kubelet over D-Bus, verifies the result and rolls back.
//
// It writes, under a host root, only the kubelet's drop-in or config file, through the
// journal (backed up first), and records every step so that a crash can be resumed or rolled
// back. The policy types are in package policy; the migration, reclaim ladder, journal, lease
// and copy engine are packages of their own.
package remediate
