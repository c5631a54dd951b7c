// Package kube is the API-server client evictguard uses (Node Events and condition, cordon,
// drain through the Eviction API, Leases): configured from a kubeconfig file, or in-cluster
// (the ServiceAccount token and CA mounted into the DaemonSet pod), and narrowed to the calls
// evictguard makes (Interface). It routes client-go's klog output into the daemon's slog
// logger.
//
// It reads the kubeconfig file (and the files it names) or, in-cluster, the ServiceAccount
// files under /var/run/secrets/kubernetes.io/serviceaccount and KUBERNETES_SERVICE_HOST/PORT.
// It writes nothing.
package kube

import (
	"errors"
	"fmt"
	"log/slog"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
)

// ErrNoCluster means neither a kubeconfig was given nor an in-cluster configuration found:
// the daemon runs in metrics-only mode.
var ErrNoCluster = errors.New("no kubeconfig given and not running in a cluster")

// UserAgent identifies evictguard's requests in the API server's audit log.
const UserAgent = "evictguard"

// Config returns the client configuration: from kubeconfig when it is not "", else the
// in-cluster configuration, else ErrNoCluster. qps and burst bound the request rate (0 keeps
// client-go's defaults, 5 and 10).
func Config(kubeconfig string, qps float32, burst int) (*rest.Config, error) {
	var (
		cfg *rest.Config
		err error
	)
	if kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
		}
	} else {
		cfg, err = rest.InClusterConfig()
		if errors.Is(err, rest.ErrNotInCluster) {
			return nil, ErrNoCluster
		}
		if err != nil {
			return nil, fmt.Errorf("in-cluster config: %w", err)
		}
	}
	cfg.UserAgent = UserAgent
	if qps > 0 {
		cfg.QPS = qps
	}
	if burst > 0 {
		cfg.Burst = burst
	}
	return cfg, nil
}

// RouteKlog sends everything client-go logs through klog (request retries, throttling,
// warnings from the API server) to log, tagged component=client-go.
func RouteKlog(log *slog.Logger) {
	klog.SetSlogLogger(log.With("component", "client-go"))
}
