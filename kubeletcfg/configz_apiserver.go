package kubeletcfg

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
)

// ConfigzViaAPIServer is the --configz value that reads the kubelet's /configz through the
// API server's node proxy (APIServerConfigz) instead of from a URL or a file.
const ConfigzViaAPIServer = "apiserver"

// APIServerConfigz reads a kubelet's /configz through the API server:
// GET /api/v1/nodes/NODE/proxy/configz, which the API server forwards to the kubelet with its
// own kubelet-client identity.
//
// The API server authorizes the caller for get on the subresource nodes/proxy. The narrower
// nodes/configz is only known to the kubelet's own authorizer (KubeletFineGrainedAuthz,
// k/k@v1.37.2:pkg/kubelet/server/auth.go) and so only helps when the kubelet is called
// directly (DefaultConfigzURL with a bearer token); nodes/proxy also allows exec into every
// pod on the node through the kubelet API, so it is meant for an operator's kubeconfig, not
// for the DaemonSet.
type APIServerConfigz struct {
	// Config says how to reach and authenticate to the API server (a kubeconfig or the
	// in-cluster ServiceAccount).
	Config *rest.Config
	// Node is the Node's name.
	Node string
	// Timeout bounds the request (default 10s).
	Timeout time.Duration
}

// Path is the API path of the node's /configz behind the proxy.
func (a *APIServerConfigz) Path() string {
	return "/api/v1/nodes/" + url.PathEscape(a.Node) + "/proxy/configz"
}

// String is the provenance shown to users: "configz (apiserver proxy HOST/api/v1/nodes/NODE/proxy/configz)".
func (a *APIServerConfigz) String() string {
	host := ""
	if a.Config != nil {
		host = strings.TrimSuffix(a.Config.Host, "/")
	}
	return "configz (apiserver proxy " + host + a.Path() + ")"
}

// Fetch returns the /configz body as the kubelet served it.
func (a *APIServerConfigz) Fetch(ctx context.Context) ([]byte, error) {
	if a.Config == nil {
		return nil, errors.New("configz via the API server: no client configuration")
	}
	if a.Node == "" {
		return nil, errors.New("configz via the API server: no node name")
	}
	cfg := rest.CopyConfig(a.Config)
	// An unversioned client for one raw GET: no typed clientset (and none of its memory).
	// metav1's Status is registered so API errors keep their reason and message.
	s := runtime.NewScheme()
	metav1.AddToGroupVersion(s, metav1.Unversioned)
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(s).WithoutConversion()
	if cfg.APIPath == "" {
		cfg.APIPath = "/api"
	}
	client, err := rest.UnversionedRESTClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("configz via the API server %s: %w", cfg.Host, err)
	}
	timeout := a.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res := client.Get().AbsPath(a.Path()).Do(ctx)
	body, _ := res.Raw()
	err = res.Error() // the API server's Status (reason, message) when it sent one
	switch {
	case apierrors.IsForbidden(err):
		return nil, fmt.Errorf("get %s%s: %w (reading /configz through the API server needs get on nodes/proxy; "+
			"nodes/configz is only honoured by the kubelet itself: use --configz %s with a token instead)",
			cfg.Host, a.Path(), err, DefaultConfigzURL)
	case apierrors.IsNotFound(err):
		return nil, fmt.Errorf("get %s%s: %w (no Node %q — see --node-name — or its kubelet does not serve /configz: enableDebuggingHandlers: false)",
			cfg.Host, a.Path(), err, a.Node)
	case err != nil:
		return nil, fmt.Errorf("get %s%s: %w", cfg.Host, a.Path(), err)
	}
	return body, nil
}
