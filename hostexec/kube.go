package hostexec

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/evictguard/evictguard/internal/atomicfile"
)

// Credentials are API credentials lent to an operation's unit: a kubeconfig under the
// operation's directory whose token file the lender keeps fresh.
type Credentials struct {
	// Kubeconfig is the path the unit reads (--kubeconfig).
	Kubeconfig string

	h         *Host
	opID      string
	tokenFrom string // the lender's token file, copied on Refresh
}

// LendCredentials writes a kubeconfig for the operation's unit from cfg (the starter's own:
// the pod's in-cluster ServiceAccount, or a kubeconfig). Certificates and a static token are
// written inline; a token file (a projected ServiceAccount token, rotated by the kubelet) is
// copied beside it and kept fresh by Refresh while the starter follows. A ServiceAccount token
// bound to a pod stops working when that pod is deleted: the unit then cannot reach the API
// server, and a later starter finishes the API steps (see docs/remediation.md).
func (h *Host) LendCredentials(opID string, cfg *rest.Config) (*Credentials, error) {
	if cfg == nil {
		return nil, errors.New("lend API credentials: no client configuration")
	}
	dir := h.Root.Path(h.OpDir(opID))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("lend API credentials: %w", err)
	}
	ca := cfg.CAData
	if len(ca) == 0 && cfg.CAFile != "" {
		b, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("lend API credentials: %w", err)
		}
		ca = b
	}
	cluster := &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: ca, InsecureSkipTLSVerify: cfg.Insecure, TLSServerName: cfg.ServerName}
	auth := &clientcmdapi.AuthInfo{Token: cfg.BearerToken}
	c := &Credentials{h: h, opID: opID, Kubeconfig: h.managerPath(filepath.Join(h.OpDir(opID), "kubeconfig"))}
	if cfg.BearerTokenFile != "" {
		c.tokenFrom = cfg.BearerTokenFile
		auth.Token = ""
		auth.TokenFile = h.managerPath(filepath.Join(h.OpDir(opID), "token")) // read by the unit
		if err := c.Refresh(); err != nil {
			return nil, err
		}
	}
	for _, f := range []struct {
		data []byte
		file string
		dst  *[]byte
	}{{cfg.CertData, cfg.CertFile, &auth.ClientCertificateData}, {cfg.KeyData, cfg.KeyFile, &auth.ClientKeyData}} {
		*f.dst = f.data
		if len(f.data) == 0 && f.file != "" {
			b, err := os.ReadFile(f.file)
			if err != nil {
				return nil, fmt.Errorf("lend API credentials: %w", err)
			}
			*f.dst = b
		}
	}
	if cfg.ExecProvider != nil || cfg.AuthProvider != nil {
		return nil, errors.New("lend API credentials: exec and auth-provider plugins cannot be lent to the host; use a token or a client certificate")
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["cluster"] = cluster
	kc.AuthInfos["evictguard"] = auth
	kc.Contexts["evictguard"] = &clientcmdapi.Context{Cluster: "cluster", AuthInfo: "evictguard"}
	kc.CurrentContext = "evictguard"
	b, err := clientcmd.Write(*kc)
	if err != nil {
		return nil, fmt.Errorf("lend API credentials: %w", err)
	}
	if err := atomicfile.WriteFile(h.Root.Path(filepath.Join(h.OpDir(opID), "kubeconfig")), b, 0o600); err != nil {
		return nil, fmt.Errorf("lend API credentials: %w", err)
	}
	return c, nil
}

// Refresh copies the lender's token file again if it changed (the kubelet rotates projected
// tokens well before they expire).
func (c *Credentials) Refresh() error {
	if c == nil || c.tokenFrom == "" {
		return nil
	}
	tok, err := os.ReadFile(c.tokenFrom)
	if err != nil {
		return fmt.Errorf("refresh the lent token: %w", err)
	}
	dst := c.h.Root.Path(filepath.Join(c.h.OpDir(c.opID), "token"))
	if have, err := os.ReadFile(dst); err == nil && bytes.Equal(have, tok) {
		return nil
	}
	if err := atomicfile.WriteFile(dst, tok, 0o600); err != nil {
		return fmt.Errorf("refresh the lent token: %w", err)
	}
	return nil
}

// Revoke removes the lent kubeconfig and token.
func (c *Credentials) Revoke() {
	if c == nil {
		return
	}
	for _, f := range []string{"kubeconfig", "token"} {
		_ = os.Remove(c.h.Root.Path(filepath.Join(c.h.OpDir(c.opID), f)))
	}
}
