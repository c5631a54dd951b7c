// Package migration moves a container runtime's data root (Docker's data-root, containerd's
// root) to another filesystem with the runtime's downtime limited to a final delta copy: a
// table of named, journaled steps (Steps) that a crash at any point resumes or rolls back.
// The copy and verification are treecopy's; the cluster Lease is lease's.
//
// On the host it reads the runtime's config file and data root, copies into the target
// directory, rewrites the config file through the journal (backed up), stops and starts the
// runtime's and the kubelet's units over systemd's D-Bus API, and removes (or keeps, by
// policy) the old root. Through the API server it may cordon and drain the node.
package migration
