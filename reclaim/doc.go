// Package reclaim frees space on a filling node before the kubelet evicts: the reclaim ladder
// climbs, in order, the ballast (a preallocated reserve file released first and put back
// later), the container runtime's garbage collection (Docker's API or the CRI, never what a
// pod still needs), the rotated logs under /var/log (never one a log shipper has not read,
// per its position files), and then escalates to the remediation planner. It also computes
// the log pipeline's budget and publishes it (a file, a Node annotation, and config snippets
// for fluentd and Fluent Bit).
//
// It writes, under a host root, the ballast file, the log budget file and the rotated logs it
// truncates or compresses; it removes runtime objects only through the runtime's API.
package reclaim
