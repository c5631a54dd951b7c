// Package metricsauth protects evictguard's metrics endpoint with the API server's own
// authentication and authorization, as kube-rbac-proxy and controller-runtime's metrics
// filters do: a bearer token is checked with a TokenReview, and the user it names needs
// `get` on the non-resource URL being read (e.g. /metrics) by a SubjectAccessReview. The
// probes' paths (/healthz, /readyz) stay open, so the kubelet's probes need no token.
//
// It reads and writes nothing on the host; it calls the API server (create tokenreviews and
// subjectaccessreviews, which the ClusterRole system:auth-delegator grants).
//
// Why not k8s.io/apiserver's delegating authenticator and authorizer, which kube-rbac-proxy
// and controller-runtime build on: importing them adds 24 MiB to the stripped binary (27 →
// 51 MiB, measured with go1.26 and k8s.io/apiserver v0.37.2), for the generic API server's
// scheme, OpenAPI and request-header machinery this endpoint never uses. The two reviews
// are two REST calls (internal/kube, not client-go's typed clients: those pull in the apply
// configurations, another 16 MiB); what the library adds besides is the cache of their answers,
// which is here too (apimachinery's LRUExpireCache): a token's review for TokenTTL, an
// allowed decision for AllowTTL, a denied one for DenyTTL — so a scrape every 15 s costs
// the API server two requests every few minutes per scraper.
package metricsauth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/util/cache"
)

// Defaults of Config, those of kube-rbac-proxy and of the kubelet's webhook authn/authz.
const (
	DefaultTokenTTL = 2 * time.Minute
	DefaultAllowTTL = 5 * time.Minute
	DefaultDenyTTL  = 30 * time.Second
	cacheSize       = 1024
)

// Config configures an Authorizer.
type Config struct {
	Reviews           Reviewer
	TokenTTL          time.Duration // an authenticated token's review (default DefaultTokenTTL)
	AllowTTL, DenyTTL time.Duration // authorization decisions (defaults DefaultAllowTTL, DefaultDenyTTL)
	Timeout           time.Duration // per review (default 10s)
	Public            []string      // paths served without a token (e.g. /healthz, /readyz)
	Logger            *slog.Logger
	now               func() time.Time
}

// Reviewer creates the two reviews (kube.Interface does).
type Reviewer interface {
	CreateTokenReview(ctx context.Context, tr *authenticationv1.TokenReview) (*authenticationv1.TokenReview, error)
	CreateSubjectAccessReview(ctx context.Context, sar *authorizationv1.SubjectAccessReview) (*authorizationv1.SubjectAccessReview, error)
}

// Authorizer wraps HTTP handlers with the checks.
type Authorizer struct {
	cfg    Config
	tokens *cache.LRUExpireCache // sha256(token) → *authenticationv1.UserInfo (nil: rejected)
	access *cache.LRUExpireCache // user, groups, verb, path → bool
	log    *slog.Logger
}

// New returns an Authorizer.
func New(cfg Config) (*Authorizer, error) {
	if cfg.Reviews == nil {
		return nil, errors.New("metrics auth: a client for the reviews is needed")
	}
	if cfg.TokenTTL <= 0 {
		cfg.TokenTTL = DefaultTokenTTL
	}
	if cfg.AllowTTL <= 0 {
		cfg.AllowTTL = DefaultAllowTTL
	}
	if cfg.DenyTTL <= 0 {
		cfg.DenyTTL = DefaultDenyTTL
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.now == nil {
		cfg.now = time.Now
	}
	return &Authorizer{cfg: cfg, tokens: cache.NewLRUExpireCacheWithClock(cacheSize, clock(cfg.now)),
		access: cache.NewLRUExpireCacheWithClock(cacheSize, clock(cfg.now)), log: cfg.Logger.With("component", "metrics-auth")}, nil
}

type clock func() time.Time

func (c clock) Now() time.Time { return c() }

// Wrap returns next behind the checks: 401 without a valid bearer token, 403 when the
// token's user may not `get` (or the request's verb on) the path, 500 when the API server
// cannot be asked; public paths pass unchecked.
func (a *Authorizer) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if slices.Contains(a.cfg.Public, r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		token, ok := bearer(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="evictguard"`)
			http.Error(w, "Unauthorized: a bearer token is needed", http.StatusUnauthorized)
			return
		}
		user, err := a.authenticate(r.Context(), token)
		if err != nil {
			a.log.Warn("token review failed", "err", err)
			http.Error(w, "Internal Server Error: the token could not be reviewed", http.StatusInternalServerError)
			return
		}
		if user == nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="evictguard", error="invalid_token"`)
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		verb := verbOf(r.Method)
		allowed, err := a.authorize(r.Context(), user, verb, r.URL.Path)
		if err != nil {
			a.log.Warn("subject access review failed", "user", user.Username, "err", err)
			http.Error(w, "Internal Server Error: the access could not be reviewed", http.StatusInternalServerError)
			return
		}
		if !allowed {
			http.Error(w, fmt.Sprintf("Forbidden: user %q may not %s %s", user.Username, verb, r.URL.Path), http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// verbOf maps an HTTP method to the verb of a non-resource request, as the API server does.
func verbOf(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead:
		return "get"
	case http.MethodPost:
		return "post"
	case http.MethodPut:
		return "put"
	case http.MethodPatch:
		return "patch"
	case http.MethodDelete:
		return "delete"
	}
	return strings.ToLower(method)
}

// authenticate returns the token's user, nil for a token the API server rejects.
func (a *Authorizer) authenticate(ctx context.Context, token string) (*authenticationv1.UserInfo, error) {
	sum := sha256.Sum256([]byte(token))
	key := hex.EncodeToString(sum[:])
	if v, ok := a.tokens.Get(key); ok {
		return v.(*authenticationv1.UserInfo), nil
	}
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()
	tr, err := a.cfg.Reviews.CreateTokenReview(ctx, &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token}})
	if err != nil {
		return nil, fmt.Errorf("create TokenReview: %w", err)
	}
	var user *authenticationv1.UserInfo
	ttl := a.cfg.DenyTTL
	if tr.Status.Authenticated {
		user, ttl = &tr.Status.User, a.cfg.TokenTTL
	}
	a.tokens.Add(key, user, ttl)
	return user, nil
}

// authorize asks whether user may verb the non-resource path.
func (a *Authorizer) authorize(ctx context.Context, user *authenticationv1.UserInfo, verb, path string) (bool, error) {
	groups := slices.Clone(user.Groups)
	slices.Sort(groups)
	key := strings.Join([]string{user.Username, user.UID, strings.Join(groups, ","), verb, path}, "\x00")
	if v, ok := a.access.Get(key); ok {
		return v.(bool), nil
	}
	extra := map[string]authorizationv1.ExtraValue{}
	for k, v := range user.Extra {
		extra[k] = authorizationv1.ExtraValue(v)
	}
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()
	sar, err := a.cfg.Reviews.CreateSubjectAccessReview(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: user.Username, UID: user.UID, Groups: user.Groups, Extra: extra,
		NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: path, Verb: verb},
	}})
	if err != nil {
		return false, fmt.Errorf("create SubjectAccessReview: %w", err)
	}
	ttl := a.cfg.DenyTTL
	if sar.Status.Allowed {
		ttl = a.cfg.AllowTTL
	}
	a.access.Add(key, sar.Status.Allowed, ttl)
	return sar.Status.Allowed, nil
}
