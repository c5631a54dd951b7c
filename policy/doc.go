// Package policy holds the types of what evictguard may do to a node: when and how far it may
// lower the kubelet's eviction thresholds (Policy), and whether and where it may move the
// container runtime's data root (MigrationPolicy), with their defaults and validation.
//
// It is types only, as the kubelet's eviction/api is: configuration loading imports it
// without the actions. Validation returns field errors (apimachinery's field.ErrorList) whose
// Field is the path below the policy, so a caller places them in its own file. It reads and
// writes nothing on the host.
package policy
