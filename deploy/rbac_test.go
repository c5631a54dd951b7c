package deploy

import (
	"bytes"
	"os"
	"slices"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

// TestRBACLeastPrivilege pins what the daemon's identity may do: the exact rules, no
// wildcards, nothing on secrets. Widening it must be a visible change here.
func TestRBACLeastPrivilege(t *testing.T) {
	b, err := os.ReadFile("kubernetes/rbac.yaml")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{} // "Kind/ns/resource" → verbs
	kinds := map[string]int{}
	for _, doc := range bytes.Split(b, []byte("\n---\n")) {
		var meta struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Namespace string `json:"namespace"`
			} `json:"metadata"`
			Rules []rbacv1.PolicyRule `json:"rules"`
		}
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatalf("rbac.yaml: %v", err)
		}
		kinds[meta.Kind]++
		for _, r := range meta.Rules {
			for _, res := range r.Resources {
				for _, g := range r.APIGroups {
					key := meta.Kind + "/" + meta.Metadata.Namespace + "/" + g + "/" + res
					got[key] = append(got[key], r.Verbs...)
				}
			}
			for _, v := range append(append(append([]string{}, r.Verbs...), r.Resources...), r.APIGroups...) {
				if strings.Contains(v, "*") {
					t.Errorf("wildcard %q in %s rules", v, meta.Kind)
				}
			}
		}
	}
	want := map[string][]string{
		"ClusterRole///nodes":        {"get", "patch"}, // the log budget annotation, only that (admission.yaml)
		"ClusterRole///nodes/status": {"patch"},
		"Role/default//events":       {"create", "get", "patch"},
	}
	if len(got) != len(want) {
		t.Errorf("rules = %v, want %v", got, want)
	}
	for k, v := range want {
		g := slices.Clone(got[k])
		slices.Sort(g)
		if !slices.Equal(g, v) {
			t.Errorf("%s: verbs %v, want %v", k, g, v)
		}
	}
	for _, k := range []string{"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"} {
		if kinds[k] != 1 {
			t.Errorf("%d %s objects, want 1", kinds[k], k)
		}
	}
}
