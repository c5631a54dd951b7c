// Package lease limits how many nodes of a cluster change themselves at once (restart their
// kubelet, move a data root): a node holds one of N coordination.k8s.io Leases while it acts.
//
// It reads and writes only Lease objects, through the API server; nothing on the host.
package lease
