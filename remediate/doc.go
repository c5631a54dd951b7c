// Package remediate holds the policy, the planner and the crash-safe actions that change a node
// to keep it out of disk-pressure eviction: rewriting the kubelet's eviction settings,
// migrating the runtime's data root, and reclaiming log-pipeline space.
//
// It writes, under a host root, only through internal/atomicfile, and records every step in a
// journal so that a crash can be resumed or rolled back.
package remediate
