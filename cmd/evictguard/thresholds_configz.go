package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/evictguard/evictguard/internal/kube"
	"github.com/evictguard/evictguard/kubeletcfg"
)

// configzOptions sets where Discover reads the kubelet's /configz: configz is a URL, a file,
// or "apiserver" for GET /api/v1/nodes/NODE/proxy/configz with the client configuration of
// kubeconfig ("" = in-cluster) as node ("" = the lowercased host name, the kubelet's default
// node name). tokenFile holds a bearer token for a URL. Errors are the user's (exit 2).
func configzOptions(opts *kubeletcfg.Options, configz, tokenFile, kubeconfig, node string) error {
	if configz != kubeletcfg.ConfigzViaAPIServer {
		opts.ConfigzURL = configz
		if tokenFile == "" {
			return nil
		}
		tok, err := os.ReadFile(tokenFile)
		if err != nil {
			return fmt.Errorf("--configz-token-file: %w", err)
		}
		opts.ConfigzToken = strings.TrimSpace(string(tok))
		return nil
	}
	if tokenFile != "" {
		return errors.New("--configz-token-file is for a kubelet URL; --configz apiserver authenticates with the kubeconfig (--kubeconfig)")
	}
	cfg, err := kube.Config(kubeconfig, 0, 0)
	switch {
	case errors.Is(err, kube.ErrNoCluster):
		return errors.New("--configz apiserver needs --kubeconfig, or a ServiceAccount when run in a pod")
	case err != nil:
		return fmt.Errorf("--configz apiserver: %w", err)
	}
	if node == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("--configz apiserver: no --node-name and no host name: %w", err)
		}
		node = strings.ToLower(h)
	}
	opts.ConfigzURL, opts.ConfigzAPIServer = "", &kubeletcfg.APIServerConfigz{Config: cfg, Node: node}
	return nil
}
