package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"

	certutil "k8s.io/client-go/util/cert"

	"github.com/evictguard/evictguard/config"
	"github.com/evictguard/evictguard/internal/kube"
	"github.com/evictguard/evictguard/internal/metricsauth"
)

// secureMetrics puts --metrics-auth in front of the metrics handler: with "kubernetes", every
// path but the probes' needs a bearer token the API server authenticates and allows to get
// the path, and the listener serves HTTPS (a token must not cross the network in clear).
// It returns the handler and the listener to serve (ln itself for "none"). client is the
// daemon's API server client, nil with cfgErr when none is configured.
func (o *runOptions) secureMetrics(h http.Handler, ln net.Listener, node string, client *kube.Client, cfgErr error, log *slog.Logger) (http.Handler, net.Listener, error) {
	switch o.cfg.Metrics.Auth {
	case "", config.MetricsAuthNone:
		if o.cfg.Metrics.TLS.CertFile == "" {
			return h, ln, nil
		}
	case config.MetricsAuthKubernetes:
		if errors.Is(cfgErr, kube.ErrNoCluster) {
			return nil, nil, usageErr(errors.New("--metrics-auth kubernetes needs an API server (in-cluster or --kubeconfig)"))
		}
		if cfgErr != nil {
			return nil, nil, usageErr(cfgErr)
		}
		a, err := metricsauth.New(metricsauth.Config{
			Reviews: client,
			Public:  []string{"/healthz", "/readyz"}, Logger: log,
		})
		if err != nil {
			return nil, nil, problem(err)
		}
		h = a.Wrap(h)
	default:
		return nil, nil, usageErr(fmt.Errorf("--metrics-auth %q: want none or kubernetes", o.cfg.Metrics.Auth))
	}
	cert, err := o.servingCert(node, log)
	if err != nil {
		return nil, nil, err
	}
	return h, tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}), nil
}

// servingCert loads --tls-cert-file/--tls-private-key-file, or makes a self-signed
// certificate for the node's name (as kube-rbac-proxy and the kubelet do without one;
// Prometheus then scrapes with insecure_skip_verify, the token still authenticating it).
func (o *runOptions) servingCert(node string, log *slog.Logger) (tls.Certificate, error) {
	if (o.cfg.Metrics.TLS.CertFile == "") != (o.cfg.Metrics.TLS.KeyFile == "") {
		return tls.Certificate{}, usageErr(errors.New("--tls-cert-file and --tls-private-key-file go together"))
	}
	if o.cfg.Metrics.TLS.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(o.cfg.Metrics.TLS.CertFile, o.cfg.Metrics.TLS.KeyFile)
		if err != nil {
			return tls.Certificate{}, usageErr(fmt.Errorf("--tls-cert-file: %w", err))
		}
		return cert, nil
	}
	if node == "" {
		node, _ = os.Hostname()
	}
	certPEM, keyPEM, err := certutil.GenerateSelfSignedCertKey(node, nil, nil)
	if err != nil {
		return tls.Certificate{}, problem(fmt.Errorf("self-signed certificate: %w", err))
	}
	log.Info("serving metrics over HTTPS with a self-signed certificate", "host", node)
	return tls.X509KeyPair(certPEM, keyPEM)
}
