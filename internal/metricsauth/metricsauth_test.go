package metricsauth

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/evictguard/evictguard/internal/kube/kubetest"
)

// TestWrap: the status of each request and how many reviews reach the API server, with the
// answers cached (the fake clientset stands in for the API server's review endpoints; the
// e2e test TestMetricsAuthAgainstAPIServer asks the real one).
func TestWrap(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	client := fake.NewClientset()
	var tokenReviews, accessReviews int
	client.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		tokenReviews++
		tr := a.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenReview)
		switch tr.Spec.Token {
		case "prometheus":
			tr.Status = authenticationv1.TokenReviewStatus{Authenticated: true, User: authenticationv1.UserInfo{Username: "system:serviceaccount:monitoring:prometheus", Groups: []string{"system:serviceaccounts"}}}
		case "nobody":
			tr.Status = authenticationv1.TokenReviewStatus{Authenticated: true, User: authenticationv1.UserInfo{Username: "system:serviceaccount:default:nobody"}}
		}
		return true, tr, nil
	})
	client.PrependReactor("create", "subjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		accessReviews++
		sar := a.(k8stesting.CreateAction).GetObject().(*authorizationv1.SubjectAccessReview)
		na := sar.Spec.NonResourceAttributes
		sar.Status.Allowed = sar.Spec.User == "system:serviceaccount:monitoring:prometheus" && na != nil && na.Path == "/metrics" && na.Verb == "get"
		return true, sar, nil
	})
	a, err := New(Config{Reviews: kubetest.New(client),
		Public: []string{"/healthz", "/readyz"}, now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	h := a.Wrap(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	tests := []struct {
		name, method, path, header  string
		advance                     time.Duration
		want                        int
		tokenReviews, accessReviews int // totals after the request
	}{
		{name: "no token", path: "/metrics", want: 401},
		{name: "not a bearer token", path: "/metrics", header: "Basic YTpi", want: 401},
		{name: "probe path needs none", path: "/healthz", want: 200},
		{name: "rejected token", path: "/metrics", header: "Bearer forged", want: 401, tokenReviews: 1},
		{name: "rejected token again: cached", path: "/metrics", header: "Bearer forged", want: 401, tokenReviews: 1},
		{name: "token without the permission", path: "/metrics", header: "Bearer nobody", want: 403, tokenReviews: 2, accessReviews: 1},
		{name: "prometheus", path: "/metrics", header: "Bearer prometheus", want: 200, tokenReviews: 3, accessReviews: 2},
		{name: "prometheus 15 s later: both cached", path: "/metrics", header: "bearer prometheus", advance: 15 * time.Second, want: 200, tokenReviews: 3, accessReviews: 2},
		{name: "another path is another decision", path: "/debug", header: "Bearer prometheus", want: 403, tokenReviews: 3, accessReviews: 3},
		{name: "POST is another verb", method: http.MethodPost, path: "/metrics", header: "Bearer prometheus", want: 403, tokenReviews: 3, accessReviews: 4},
		{name: "after the token TTL: reviewed again, access still cached", path: "/metrics", header: "Bearer prometheus", advance: 2 * time.Minute, want: 200, tokenReviews: 4, accessReviews: 4},
		{name: "after the allow TTL: both again", path: "/metrics", header: "Bearer prometheus", advance: 5 * time.Minute, want: 200, tokenReviews: 5, accessReviews: 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			now = now.Add(tc.advance)
			method := tc.method
			if method == "" {
				method = http.MethodGet
			}
			req := httptest.NewRequest(method, tc.path, nil)
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Errorf("status %d, want %d (%s)", rec.Code, tc.want, rec.Body)
			}
			if tokenReviews != tc.tokenReviews || accessReviews != tc.accessReviews {
				t.Errorf("reviews so far: %d token, %d access; want %d, %d", tokenReviews, accessReviews, tc.tokenReviews, tc.accessReviews)
			}
		})
	}
}
