package main

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/evictguard/evictguard/internal/config"
)

func init() { subcommands = append(subcommands, newConfigCommand) }

func newConfigCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Check or print the configuration file (" + config.APIVersion + " " + config.Kind + ")",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "validate FILE",
		Short: "Decode FILE strictly, apply defaults and validate it; errors name the file and line (exit 2)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := config.LoadFile(args[0]); err != nil {
				return usageErr(err)
			}
			fmt.Fprintf(g.stdout, "%s: valid\n", args[0])
			return nil
		},
	}, &cobra.Command{
		Use:   "defaults",
		Short: "Print the complete default configuration (YAML, or JSON with --output json)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c := config.Default()
			if g.output == "json" {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(c)
			}
			b, err := config.Marshal(c)
			if err != nil {
				return problem(err)
			}
			_, err = g.stdout.Write(b)
			return err
		},
	})
	return cmd
}

// applyConfig copies the file's values into o for every flag the user did not set: an
// explicitly set flag wins over the file, the file wins over the flag's default.
func applyConfig(o *runOptions, c *config.Configuration, fs *pflag.FlagSet) {
	set := func(name string) bool {
		f := fs.Lookup(name)
		return f != nil && f.Changed
	}
	str := func(name string, dst *string, v string) {
		if !set(name) {
			*dst = v
		}
	}
	dur := func(name string, dst *time.Duration, v config.Duration) {
		if !set(name) {
			*dst = v.Duration
		}
	}
	m := c.Monitor
	dur("interval", &o.interval, m.Interval)
	dur("warn-horizon", &o.warnHorizon, m.WarnHorizon)
	if !set("warn-margin") {
		o.warnMargin = m.WarnMargin
	}
	dur("statfs-timeout", &o.statfsTimeout, m.StatfsTimeout)
	if !set("log-dir") {
		o.logDirs = m.LogDirs
	}
	str("runtime", &o.runtime, m.Runtime)
	str("cri-endpoint", &o.criEndpoint, m.CRIEndpoint)
	str("docker-socket", &o.dockerSocket, m.DockerSocket)
	str("kubelet-cmdline", &o.kubeletCmdline, m.KubeletCmdline)
	str("kubelet-version", &o.kubeletVersion, m.KubeletVersion)
	str("configz", &o.configz, m.Configz.URL)
	str("configz-token-file", &o.configzTokenFile, m.Configz.TokenFile)
	dur("configz-interval", &o.configzInterval, m.Configz.Interval)
	str("listen", &o.listen, c.Metrics.Listen)
	if !set("alertmanager.url") {
		o.alertmanagerURLs = c.Alerts.AlertmanagerURLs
	}
	dur("alertmanager.resend", &o.alertmanagerResend, c.Alerts.Resend)
	dur("alert-for", &o.alertFor, c.Alerts.For)
	dur("critical-horizon", &o.criticalHorizon, c.Alerts.CriticalHorizon)
	str("kubeconfig", &o.kubeconfig, c.Kubernetes.Kubeconfig)
	if !set("node-name") && c.Kubernetes.NodeName != "" {
		o.nodeName = c.Kubernetes.NodeName // else keep $NODE_NAME
	}
}
