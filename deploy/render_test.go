package deploy

import (
	"encoding/json"
	"os"
	"reflect"
	"sort"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/evictguard/evictguard/config"
)

func byKey(t *testing.T, objs []Object) map[string]Object {
	t.Helper()
	m := map[string]Object{}
	for _, o := range objs {
		k := Key(o)
		if _, dup := m[k]; dup {
			t.Errorf("duplicate object %s", k)
		}
		m[k] = o
	}
	return m
}

// TestHelmChartMatchesKustomize renders each kustomization with the kustomize library and
// deploy/helm/evictguard with Helm's engine (namespace evictguard) and requires the same
// objects, field for field: the base with the chart's default values, the remediation
// overlay with remediation.enabled. The only difference allowed is the Namespace object,
// which `helm install --create-namespace` creates.
func TestHelmChartMatchesKustomize(t *testing.T) {
	tests := []struct {
		name   string
		dir    string
		values map[string]any
		min    int
	}{
		{"base vs default values", "kubernetes/base", nil, 10},
		{"remediation overlay vs remediation.enabled", "kubernetes/overlays/remediation",
			map[string]any{"remediation": map[string]any{"enabled": true}}, 14},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kust, err := Kustomize(tt.dir)
			if err != nil {
				t.Fatal(err)
			}
			chart, err := Helm("helm/evictguard", "evictguard", "evictguard", tt.values)
			if err != nil {
				t.Fatal(err)
			}
			k, h := byKey(t, kust), byKey(t, chart)
			delete(k, "v1 Namespace /evictguard")
			var keys []string
			for key := range k {
				keys = append(keys, key)
			}
			sort.Strings(keys)
			for _, key := range keys {
				ho, ok := h[key]
				if !ok {
					t.Errorf("chart lacks %s", key)
					continue
				}
				if !reflect.DeepEqual(k[key], ho) {
					kb, _ := json.MarshalIndent(k[key], "", "  ")
					hb, _ := json.MarshalIndent(ho, "", "  ")
					t.Errorf("%s differs:\nkustomize: %s\nhelm:      %s", key, kb, hb)
				}
			}
			for key := range h {
				if _, ok := k[key]; !ok {
					t.Errorf("chart has %s, %s does not", key, tt.dir)
				}
			}
			if len(k) < tt.min {
				t.Errorf("%s renders only %d objects: %v", tt.dir, len(k), keys)
			}
		})
	}
}

// TestHelmChartBadMoveTarget: a move target that cannot name a volume fails the render.
func TestHelmChartBadMoveTarget(t *testing.T) {
	for _, p := range []string{"data", "/data/", "/mnt/Disk_1"} {
		t.Run(p, func(t *testing.T) {
			_, err := Helm("helm/evictguard", "evictguard", "evictguard", map[string]any{
				"remediation": map[string]any{"enabled": true, "moveTargets": []any{p}}})
			if err == nil || !strings.Contains(err.Error(), "remediation.moveTargets") {
				t.Errorf("err = %v, want a remediation.moveTargets error", err)
			}
		})
	}
}

// TestHelmChartRemediationNamespace: in another namespace, the remediation config's restart
// lock follows the release (where the Leases Role is), and the config still loads.
func TestHelmChartRemediationNamespace(t *testing.T) {
	objs, err := Helm("helm/evictguard", "eg", "monitoring", map[string]any{"remediation": map[string]any{"enabled": true}})
	if err != nil {
		t.Fatal(err)
	}
	m := byKey(t, objs)
	cm := m["v1 ConfigMap monitoring/evictguard-config"]
	if cm == nil {
		t.Fatal("no ConfigMap")
	}
	data, _ := cm["data"].(map[string]any)["config.yaml"].(string)
	c, err := config.Load("config.yaml", []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	if c.Policy.Lock.Namespace != "monitoring" || c.Policy.Dry() {
		t.Errorf("lock namespace %q dryRun %v, want monitoring and false", c.Policy.Lock.Namespace, c.Policy.Dry())
	}
	if m["rbac.authorization.k8s.io/v1 Role monitoring/evictguard-restart-lock"] == nil {
		t.Error("no restart-lock Role in the release namespace")
	}
}

// TestHelmChartOptionalObjects: the Prometheus Operator objects and the admission policy can
// be switched off (clusters without those CRDs), and another namespace reaches every object.
func TestHelmChartOptionalObjects(t *testing.T) {
	objs, err := Helm("helm/evictguard", "eg", "monitoring", map[string]any{
		"serviceMonitor": map[string]any{"enabled": false}, "prometheusRule": map[string]any{"enabled": false},
		"admissionPolicy": map[string]any{"enabled": false},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		switch o["kind"] {
		case "ServiceMonitor", "PrometheusRule", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding":
			t.Errorf("%s rendered although disabled", Key(o))
		}
		md := o["metadata"].(map[string]any)
		if ns, ok := md["namespace"]; ok && ns != "monitoring" && ns != "default" {
			t.Errorf("%s in namespace %v, want monitoring", Key(o), ns)
		}
	}
}

// TestRemediationOverlay pins what the overlay (and the chart's remediation toggle) adds:
// hostPID, privileged, and each host mount read-write, while the base stays unprivileged and
// read-only but for evictguard's own state directory (the fill-rate history).
func TestRemediationOverlay(t *testing.T) {
	for _, tt := range []struct {
		dir        string
		privileged bool
		mounts     int
		render     func() ([]Object, error)
	}{
		{"kubernetes/base", false, 3, nil},
		{"kubernetes/overlays/remediation", true, 11, nil},
		{"helm/evictguard remediation.enabled, two move targets", true, 12, func() ([]Object, error) {
			return Helm("helm/evictguard", "evictguard", "evictguard", map[string]any{
				"remediation": map[string]any{"enabled": true, "moveTargets": []any{"/data", "/mnt/disk1"}}})
		}},
	} {
		render := tt.render
		if render == nil {
			render = func() ([]Object, error) { return Kustomize(tt.dir) }
		}
		objs, err := render()
		if err != nil {
			t.Fatal(err)
		}
		ds := byKey(t, objs)["apps/v1 DaemonSet evictguard/evictguard"]
		if ds == nil {
			t.Fatalf("%s: no DaemonSet", tt.dir)
		}
		b, _ := json.Marshal(ds)
		var d struct {
			Spec struct {
				Template struct {
					Spec struct {
						HostPID    bool `json:"hostPID"`
						Containers []struct {
							SecurityContext struct {
								Privileged   *bool `json:"privileged"`
								Capabilities any   `json:"capabilities"`
							} `json:"securityContext"`
							VolumeMounts []struct {
								Name, MountPath string
								ReadOnly        bool `json:"readOnly"`
							} `json:"volumeMounts"`
						} `json:"containers"`
					} `json:"spec"`
				} `json:"template"`
			} `json:"spec"`
		}
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatal(err)
		}
		ps := d.Spec.Template.Spec
		c := ps.Containers[0]
		if ps.HostPID != tt.privileged || (c.SecurityContext.Privileged != nil && *c.SecurityContext.Privileged) != tt.privileged {
			t.Errorf("%s: hostPID=%v privileged=%v, want %v", tt.dir, ps.HostPID, c.SecurityContext.Privileged, tt.privileged)
		}
		if tt.privileged && c.SecurityContext.Capabilities != nil {
			t.Errorf("%s: capabilities %v left beside privileged", tt.dir, c.SecurityContext.Capabilities)
		}
		if len(c.VolumeMounts) != tt.mounts {
			t.Errorf("%s: %d mounts, want %d: %+v", tt.dir, len(c.VolumeMounts), tt.mounts, c.VolumeMounts)
		}
		for _, m := range c.VolumeMounts {
			if !tt.privileged && !m.ReadOnly && m.MountPath != "/host/var/lib/evictguard" {
				t.Errorf("%s: mount %s is writable in the monitor-only base", tt.dir, m.MountPath)
			}
		}
	}
}

// TestImageReference: the image `make image` builds (deploy/image) is the one every rendered
// DaemonSet runs — the kustomize base and overlay (images:) and the chart (values.yaml) —
// and the chart's appVersion is its tag.
func TestImageReference(t *testing.T) {
	b, err := os.ReadFile("image")
	if err != nil {
		t.Fatal(err)
	}
	want := strings.TrimSpace(string(b))
	renders := map[string]func() ([]Object, error){
		"kustomize base":        func() ([]Object, error) { return Kustomize("kubernetes/base") },
		"kustomize remediation": func() ([]Object, error) { return Kustomize("kubernetes/overlays/remediation") },
		"helm default values":   func() ([]Object, error) { return Helm("helm/evictguard", "evictguard", "evictguard", nil) },
		"helm remediation values": func() ([]Object, error) {
			return Helm("helm/evictguard", "evictguard", "evictguard", map[string]any{"remediation": map[string]any{"enabled": true}})
		},
	}
	for name, render := range renders {
		t.Run(name, func(t *testing.T) {
			objs, err := render()
			if err != nil {
				t.Fatal(err)
			}
			var images []string
			for _, o := range objs {
				if o["kind"] != "DaemonSet" {
					continue
				}
				cs, _, _ := unstructured.NestedSlice(o, "spec", "template", "spec", "containers")
				for _, c := range cs {
					images = append(images, c.(map[string]any)["image"].(string))
				}
			}
			if len(images) != 1 || images[0] != want {
				t.Errorf("DaemonSet images %v, want [%s] (deploy/image)", images, want)
			}
		})
	}
	chart, err := os.ReadFile("helm/evictguard/Chart.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tag := want[strings.LastIndex(want, ":")+1:]
	if !strings.Contains(string(chart), "appVersion: \""+tag+"\"") {
		t.Errorf("Chart.yaml's appVersion is not %q", tag)
	}
}
