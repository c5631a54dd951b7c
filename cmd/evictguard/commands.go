package main

import "github.com/spf13/cobra"

// commands is every subcommand of evictguard, each in the file of its name.
var commands = []func(*globalOptions) *cobra.Command{
	newStatusCommand,     // status.go: the node's filesystems, signals and predictions
	newThresholdsCommand, // thresholds.go: the kubelet's effective thresholds and their sources
	newRunCommand,        // run.go: the daemon
	newPlanCommand,       // plan.go: what remediation would do now, and why
	newApplyCommand,      // apply.go: the threshold rewrite, under the policy
	newMigrateCommand,    // migrate.go: move the runtime's data root
	newConfigCommand,     // config.go: check or print the configuration file
	newFleetCommand,      // fleet.go: the nodes by headroom and time to threshold, from the API server
	newVersionCommand,    // version.go
}
