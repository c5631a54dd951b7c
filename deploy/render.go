package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	yamlv3 "go.yaml.in/yaml/v3"
)

// Object is one rendered Kubernetes object.
type Object = map[string]any

// Key names an object: apiVersion kind namespace/name.
func Key(o Object) string {
	md, _ := o["metadata"].(map[string]any)
	ns, _ := md["namespace"].(string)
	name, _ := md["name"].(string)
	return fmt.Sprintf("%v %v %s/%s", o["apiVersion"], o["kind"], ns, name)
}

// Kustomize renders the kustomization in dir (e.g. "kubernetes/base") with the kustomize
// library, as `kubectl kustomize dir` would.
func Kustomize(dir string) ([]Object, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), abs)
	if err != nil {
		return nil, fmt.Errorf("kustomize %s: %w", dir, err)
	}
	var out []Object
	for _, r := range rm.Resources() {
		b, err := r.MarshalJSON()
		if err != nil {
			return nil, fmt.Errorf("kustomize %s: %w", dir, err)
		}
		var m Object // the same JSON types as SplitYAML's (numbers are float64)
		if err := json.Unmarshal(b, &m); err != nil {
			return nil, fmt.Errorf("kustomize %s: %w", dir, err)
		}
		out = append(out, m)
	}
	return out, nil
}

// Helm renders the chart in dir as `helm template --namespace namespace` would, with the
// chart's values overridden by values.
func Helm(dir, release, namespace string, values map[string]any) ([]Object, error) {
	ch, err := loader.LoadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("load chart %s: %w", dir, err)
	}
	vals, err := chartutil.ToRenderValues(ch, values,
		chartutil.ReleaseOptions{Name: release, Namespace: namespace, IsInstall: true, Revision: 1},
		chartutil.DefaultCapabilities)
	if err != nil {
		return nil, fmt.Errorf("chart %s values: %w", dir, err)
	}
	files, err := engine.Render(ch, vals)
	if err != nil {
		return nil, fmt.Errorf("render chart %s: %w", dir, err)
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []Object
	for _, n := range names {
		if !strings.HasSuffix(n, ".yaml") {
			continue
		}
		objs, err := SplitYAML([]byte(files[n]))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", n, err)
		}
		out = append(out, objs...)
	}
	return out, nil
}

// SplitYAML decodes a multi-document YAML stream into objects, skipping empty documents.
func SplitYAML(b []byte) ([]Object, error) {
	dec := yamlv3.NewDecoder(bytes.NewReader(b))
	var out []Object
	for {
		var n yamlv3.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		raw, err := yamlv3.Marshal(&n)
		if err != nil {
			return nil, err
		}
		var o Object
		if err := yaml.Unmarshal(raw, &o); err != nil { // JSON-compatible maps
			return nil, err
		}
		if len(o) > 0 {
			out = append(out, o)
		}
	}
}
