package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/evictguard/evictguard/kubeletcfg"
)

type thresholdsOptions struct {
	cmdline, version, configz, tokenFile string
	kubeconfig, nodeName                 string
	// checkUsage discovers the filesystems and samples them once for the usage warnings.
	checkUsage bool
}

// thresholdsJSON is the JSON contract of `evictguard thresholds` (README.md#commands); fields
// beyond kubelet/thresholds/warnings are extras.
type thresholdsJSON struct {
	Kubelet struct {
		Version                  string `json:"version"`
		ConfigFile               string `json:"configFile"`
		ConfigDir                string `json:"configDir"`
		Found                    bool   `json:"found"`
		RootDir                  string `json:"rootDir"`
		ContainerRuntimeEndpoint string `json:"containerRuntimeEndpoint"`
	} `json:"kubelet"`
	Thresholds               []thresholdJSON `json:"thresholds"`
	PressureTransitionPeriod string          `json:"pressureTransitionPeriod"`
	Sources                  []string        `json:"sources"`
	Warnings                 []string        `json:"warnings"`
	Mismatches               []string        `json:"mismatches"`
	// ConfigzSource names the /configz compared with ("" when not checked).
	ConfigzSource string `json:"configzSource"`
}

type thresholdJSON struct {
	Signal         string `json:"signal"`
	Kind           string `json:"kind"`
	Value          string `json:"value"`
	GracePeriod    string `json:"gracePeriod"`
	MinimumReclaim string `json:"minimumReclaim"`
	Source         string `json:"source"`
}

func newThresholdsCommand(g *globalOptions) *cobra.Command {
	o := &thresholdsOptions{}
	cmd := &cobra.Command{
		Use:   "thresholds",
		Short: "Show the kubelet's effective eviction thresholds and where each comes from",
		Long: `Show the kubelet's effective eviction thresholds, the source of each, and warnings about
configuration traps. Inputs are discovered (the running kubelet's command line, its systemd
unit and environment files, its --config file and --config-dir drop-ins) unless overridden.

--configz compares the result with the kubelet's live /configz: a URL (the kubelet's own
https://127.0.0.1:10250/configz, with --configz-token-file), a file, or "apiserver" to read it
through the API server (GET /api/v1/nodes/NODE/proxy/configz with --kubeconfig or the pod's
ServiceAccount, and --node-name). The API server authorizes that as get on nodes/proxy.

Unless --check-usage=false, the filesystems are discovered as "status" does and sampled once,
to warn about imagefs thresholds that fall on nodefs (no separate imagefs) and about
thresholds already breached.

Exit code 1 when the computed settings differ from the kubelet's /configz, 2 on input errors.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runThresholds(cmd, g, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.cmdline, "kubelet-cmdline", "", `kubelet arguments to use instead of discovery (shell-like quoting), e.g. "--config=/var/lib/kubelet/config.yaml"`)
	f.StringVar(&o.version, "kubelet-version", "", "kubelet version X.Y (default: ask the kubelet binary)")
	f.StringVar(&o.configz, "configz", "", "cross-check against /configz: a URL (e.g. "+kubeletcfg.DefaultConfigzURL+"), a file, or \""+
		kubeletcfg.ConfigzViaAPIServer+"\" (through the API server's node proxy)")
	f.StringVar(&o.tokenFile, "configz-token-file", "", "file with a bearer token for a --configz URL")
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig for --configz "+kubeletcfg.ConfigzViaAPIServer+" (default: in-cluster)")
	f.StringVar(&o.nodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name for --configz "+kubeletcfg.ConfigzViaAPIServer+" (default $NODE_NAME, else the host name)")
	f.BoolVar(&o.checkUsage, "check-usage", true, "discover the filesystems and sample them once: warn about imagefs thresholds on nodefs and thresholds already breached")
	return cmd
}

func runThresholds(cmd *cobra.Command, g *globalOptions, o *thresholdsOptions) error {
	opts := kubeletcfg.Options{HostRoot: g.root(), Version: o.version, NodeName: o.nodeName, Logger: g.logger}
	if o.cmdline != "" {
		words, err := kubeletcfg.SplitCommandLine(o.cmdline)
		if err != nil {
			return usageErr(fmt.Errorf("--kubelet-cmdline: %w", err))
		}
		opts.Cmdline = words
	}
	if err := configzOptions(&opts, o.configz, o.tokenFile, o.kubeconfig, o.nodeName); err != nil {
		return usageErr(err)
	}
	eff, err := kubeletcfg.Discover(cmd.Context(), opts)
	var ie *kubeletcfg.InputError
	switch {
	case errors.As(err, &ie):
		return usageErr(err)
	case err != nil:
		return problem(err)
	}
	if o.checkUsage {
		eff.Warnings = append(eff.Warnings, usageWarningsFor(cmd.Context(), g, eff)...)
	}
	if g.output == "json" {
		if err := writeThresholdsJSON(g, eff); err != nil {
			return err
		}
	} else if err := writeThresholdsTable(g, eff); err != nil {
		return err
	}
	if len(eff.Mismatches) > 0 {
		return problem(fmt.Errorf("%d difference(s) from /configz", len(eff.Mismatches)))
	}
	return nil
}

func toJSON(eff *kubeletcfg.Effective) thresholdsJSON {
	var out thresholdsJSON
	out.Kubelet.Version = eff.Version
	out.Kubelet.ConfigFile = eff.ConfigFile
	out.Kubelet.ConfigDir = eff.ConfigDir
	out.Kubelet.Found = eff.KubeletFound
	out.Kubelet.RootDir = eff.RootDir
	out.Kubelet.ContainerRuntimeEndpoint = eff.ContainerRuntimeEndpoint
	out.Thresholds = []thresholdJSON{}
	for _, t := range eff.Thresholds {
		out.Thresholds = append(out.Thresholds, thresholdJSON{
			Signal: t.Signal, Kind: string(t.Kind), Value: t.Raw,
			GracePeriod: grace(t), MinimumReclaim: t.MinimumReclaim, Source: t.Source,
		})
	}
	out.PressureTransitionPeriod = eff.PressureTransitionPeriod.String()
	out.Sources = nonNil(eff.Sources)
	out.Warnings = nonNil(eff.Warnings)
	out.Mismatches = nonNil(eff.Mismatches)
	out.ConfigzSource = eff.ConfigzSource
	return out
}

func grace(t kubeletcfg.Threshold) string {
	if t.Kind != kubeletcfg.Soft {
		return ""
	}
	if t.GracePeriodRaw != "" {
		return t.GracePeriodRaw
	}
	return t.GracePeriod.String()
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func writeThresholdsJSON(g *globalOptions, eff *kubeletcfg.Effective) error {
	enc := json.NewEncoder(g.stdout)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false) // keep "<" readable in messages
	return enc.Encode(toJSON(eff))
}

func writeThresholdsTable(g *globalOptions, eff *kubeletcfg.Effective) error {
	w := g.stdout
	found := "kubelet " + eff.Version
	if !eff.KubeletFound {
		found += " (not found; assumed)"
	}
	fmt.Fprintf(w, "%s  config: %s  config-dir: %s  root-dir: %s  pressure-transition-period: %s\n\n",
		found, orDash(eff.ConfigFile), orDash(eff.ConfigDir), eff.RootDir, eff.PressureTransitionPeriod.Round(time.Second))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SIGNAL\tKIND\tVALUE\tGRACE\tMIN-RECLAIM\tSOURCE")
	if len(eff.Thresholds) == 0 {
		fmt.Fprintln(tw, "(none)\t\t\t\t\t")
	}
	for _, t := range eff.Thresholds {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.Signal, t.Kind, t.Raw, orDash(grace(t)), orDash(t.MinimumReclaim), t.Source)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(eff.Mismatches) > 0 {
		fmt.Fprintln(w, "\nDifferences from /configz:")
		for _, m := range eff.Mismatches {
			fmt.Fprintln(w, "  - "+m)
		}
	}
	if len(eff.Warnings) > 0 {
		fmt.Fprintln(w, "\nWarnings:")
		for _, m := range eff.Warnings {
			fmt.Fprintln(w, "  - "+m)
		}
	}
	_, err := fmt.Fprintf(w, "\nSources: %s\n", strings.Join(eff.Sources, ", "))
	return err
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
