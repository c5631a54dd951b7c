// Package deploy holds the deployment artefacts (systemd unit, Kubernetes manifests, Prometheus
// rules, Alertmanager example) and the tests that check them. It has no runtime code.
package deploy
