package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"

	"github.com/evictguard/evictguard/internal/hostfs"
)

// Exit codes of the CLI contract (README.md#commands).
const (
	exitOK      = 0
	exitProblem = 1 // the check found a problem (a breached signal, a configz mismatch)
	exitUsage   = 2 // usage or input error
)

// exitError carries an exit code through cobra's error return.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageErr marks err as a usage or input error (exit 2).
func usageErr(err error) error { return &exitError{code: exitUsage, err: err} }

// problem marks a finding (exit 1) with the message to print on stderr.
func problem(err error) error { return &exitError{code: exitProblem, err: err} }

// globalOptions are the flags every command takes.
type globalOptions struct {
	hostRoot string
	output   string
	logLevel string

	stdout, stderr io.Writer
	logger         *slog.Logger
}

func (g *globalOptions) root() hostfs.Root { return hostfs.Root(g.hostRoot) }

func (g *globalOptions) validate() error {
	switch g.output {
	case "table", "json":
	default:
		return fmt.Errorf("--output must be table or json, not %q", g.output)
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	g.logger = slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: lvl}))
	return nil
}

func newRootCommand(g *globalOptions) *cobra.Command {
	root := &cobra.Command{
		Use:           "evictguard",
		Short:         "Keep a Kubernetes node out of disk-pressure eviction",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(*cobra.Command, []string) error {
			if err := g.validate(); err != nil {
				return usageErr(err)
			}
			return nil
		},
	}
	root.SetOut(g.stdout)
	root.SetErr(g.stderr)
	pf := root.PersistentFlags()
	pf.StringVar(&g.hostRoot, "host-root", "/", "directory where the node's / is visible (/host in the DaemonSet)")
	pf.StringVarP(&g.output, "output", "o", "table", "output format: table or json")
	pf.StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	for _, mk := range commands {
		root.AddCommand(mk(g))
	}
	return root
}

// execute runs the CLI and maps errors to the exit codes of the contract.
func execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	g := &globalOptions{stdout: stdout, stderr: stderr}
	root := newRootCommand(g)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "evictguard: %v\n", err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	// cobra's own flag and argument errors are usage errors.
	if strings.Contains(err.Error(), "unknown flag") || strings.Contains(err.Error(), "unknown command") ||
		strings.Contains(err.Error(), "flag needs an argument") || strings.Contains(err.Error(), "invalid argument") ||
		strings.Contains(err.Error(), "accepts ") {
		return exitUsage
	}
	return exitProblem
}
