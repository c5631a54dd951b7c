package kubeletcfg

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
	yamlv3 "sigs.k8s.io/yaml/goyaml.v3"

	"github.com/evictguard/evictguard/internal/hostfs"
)

const (
	configAPIVersion = "kubelet.config.k8s.io/v1beta1"
	configKind       = "KubeletConfiguration"
)

// Field names of the eviction settings in a KubeletConfiguration.
const (
	fieldHard       = "evictionHard"
	fieldSoft       = "evictionSoft"
	fieldGrace      = "evictionSoftGracePeriod"
	fieldReclaim    = "evictionMinimumReclaim"
	fieldTransition = "evictionPressureTransitionPeriod"
	fieldMerge      = "mergeDefaultEvictionSettings"
)

// yamlPositions are the lines of the keys of a YAML (or JSON) document: top-level keys by name
// and the keys of the eviction maps as "evictionHard/nodefs.available".
type yamlPositions map[string]int

// positionsOf parses data into a node tree to find key lines; the kubelet's own decoder
// (sigs.k8s.io/yaml → JSON) keeps no positions. It also reports syntax errors with a line.
func positionsOf(data []byte, file string) (yamlPositions, map[string]*yamlv3.Node, error) {
	var doc yamlv3.Node
	if err := yamlv3.Unmarshal(data, &doc); err != nil {
		return nil, nil, yamlError(file, err)
	}
	pos := yamlPositions{}
	vals := map[string]*yamlv3.Node{}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yamlv3.MappingNode {
		return pos, vals, nil
	}
	top := doc.Content[0]
	for i := 0; i+1 < len(top.Content); i += 2 {
		k, v := top.Content[i], top.Content[i+1]
		pos[k.Value] = k.Line
		vals[k.Value] = v
		if v.Kind == yamlv3.MappingNode {
			for j := 0; j+1 < len(v.Content); j += 2 {
				pos[k.Value+"/"+v.Content[j].Value] = v.Content[j].Line
			}
		}
	}
	return pos, vals, nil
}

var yamlLineRE = regexp.MustCompile(`line (\d+)`)

// yamlError turns a YAML parser error into an InputError at the line it names.
func yamlError(file string, err error) *InputError {
	msg := err.Error()
	line := 0
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	msg = yamlLineRE.ReplaceAllString(msg, "")
	msg = strings.TrimPrefix(strings.TrimSpace(msg), ": ")
	return &InputError{File: file, Line: line, Msg: "malformed YAML: " + msg, Err: err}
}

// checkTypeMeta requires apiVersion kubelet.config.k8s.io/v1beta1 and kind
// KubeletConfiguration, the only type the kubelet's codec accepts
// (k/k@v1.37.2:pkg/kubelet/kubeletconfig/util/codec/codec.go; drop-ins:
// cmd/kubelet/app/server.go mergeKubeletConfigurations).
func checkTypeMeta(j []byte, file string, pos yamlPositions) error {
	var tm struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	_ = json.Unmarshal(j, &tm)
	switch {
	case tm.APIVersion == "" && tm.Kind == "":
		return inputErrorf(origin{file: file, line: 1}, "no apiVersion/kind: the kubelet needs apiVersion: %s and kind: %s", configAPIVersion, configKind)
	case tm.APIVersion != configAPIVersion:
		return inputErrorf(origin{file: file, line: pos["apiVersion"]}, "unknown apiVersion %q: the kubelet reads %s", tm.APIVersion, configAPIVersion)
	case tm.Kind != configKind:
		return inputErrorf(origin{file: file, line: pos["kind"]}, "unknown kind %q for %s: want %s", tm.Kind, configAPIVersion, configKind)
	}
	return nil
}

// configDoc is one decoded config file (main or drop-in).
type configDoc struct {
	file string
	json []byte // the document as JSON
	pos  yamlPositions
	vals map[string]*yamlv3.Node
}

// readConfigDoc reads a kubelet config file at node path p, converts it to JSON and checks
// its type. Relative paths are resolved by the caller.
func readConfigDoc(root hostfs.Root, p string) (*configDoc, error) {
	data, err := os.ReadFile(root.Path(p))
	if err != nil {
		return nil, &InputError{File: p, Msg: fmt.Sprintf("cannot read kubelet config file: %v", unwrapPathErr(err)), Err: err}
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, &InputError{File: p, Msg: "kubelet config file was empty"}
	}
	// The kubelet's own YAML decoder first, so a syntax error names the line it would.
	j, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, yamlError(p, err)
	}
	pos, vals, err := positionsOf(data, p)
	if err != nil {
		return nil, err
	}
	if err := checkTypeMeta(j, p, pos); err != nil {
		return nil, err
	}
	return &configDoc{file: p, json: j, pos: pos, vals: vals}, nil
}

func unwrapPathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

var jsonFieldRE = regexp.MustCompile(`Go struct field [A-Za-z]+\.([A-Za-z0-9]+)`)

// decodeConfig decodes JSON into the v1beta1 type like the kubelet: strict first, and if only
// strictness failed (unknown or duplicate fields), leniently with a warning
// (codec.go DecodeKubeletConfiguration). Field names are case-sensitive.
func decodeConfig(j []byte, file string, pos yamlPositions) (*kubeletv1beta1.KubeletConfiguration, []string, error) {
	kc := &kubeletv1beta1.KubeletConfiguration{}
	strictErrs, err := sigsjson.UnmarshalStrict(j, kc, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
	if err != nil {
		line := 0
		if m := jsonFieldRE.FindStringSubmatch(err.Error()); m != nil {
			line = pos[m[1]]
		}
		return nil, nil, &InputError{File: file, Line: line, Msg: "cannot decode KubeletConfiguration: " + strings.TrimPrefix(err.Error(), "json: "), Err: err}
	}
	var warns []string
	for _, se := range strictErrs {
		warns = append(warns, fmt.Sprintf("%s: %v; the kubelet ignores it (lenient decoding)", file, se))
	}
	return kc, warns, nil
}

// mapsFromDoc returns the eviction maps set in a main config file, with each key's line.
// A map present but empty (evictionHard: {}) is non-nil, as in the kubelet.
func mapsFromDoc(kc *kubeletv1beta1.KubeletConfiguration, d *configDoc) evictionMaps {
	mk := func(field string, m map[string]string) emap {
		if m == nil {
			return nil
		}
		out := make(emap, len(m))
		for k, v := range m {
			line := d.pos[field+"/"+k]
			if line == 0 {
				line = d.pos[field]
			}
			out[k] = entry{val: v, o: origin{file: d.file, line: line}}
		}
		return out
	}
	return evictionMaps{
		hard: mk(fieldHard, kc.EvictionHard), soft: mk(fieldSoft, kc.EvictionSoft),
		grace: mk(fieldGrace, kc.EvictionSoftGracePeriod), reclaim: mk(fieldReclaim, kc.EvictionMinimumReclaim),
	}
}

// dropInFiles lists *.conf files under dir (a node path), recursively, in the lexical order
// of filepath.WalkDir, as mergeKubeletConfigurations does. Other files are skipped.
func dropInFiles(root hostfs.Root, dir string) ([]string, error) {
	var out []string
	base := root.Path(dir)
	err := filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || filepath.Ext(d.Name()) != ".conf" {
			return nil
		}
		rel, err := filepath.Rel(base, p)
		if err != nil {
			return err
		}
		out = append(out, filepath.Join(dir, rel))
		return nil
	})
	if err != nil {
		return nil, &InputError{File: dir, Msg: fmt.Sprintf("cannot walk kubelet drop-in directory: %v", unwrapPathErr(err)), Err: err}
	}
	return out, nil
}

// applyDropIn merges one drop-in onto base (JSON) with an RFC 7386 merge patch, the way the
// kubelet does (gopkg.in/evanphx/json-patch.v4 MergePatch): maps merge per key, null deletes,
// anything else replaces. m and the transition origin follow the patch for provenance.
func applyDropIn(base []byte, d *configDoc, m *evictionMaps, transition *origin) ([]byte, error) {
	merged, err := jsonpatch.MergePatch(base, d.json)
	if err != nil {
		return nil, &InputError{File: d.file, Msg: fmt.Sprintf("cannot merge drop-in: %v", err), Err: err}
	}
	for field, target := range map[string]*emap{fieldHard: &m.hard, fieldSoft: &m.soft, fieldGrace: &m.grace, fieldReclaim: &m.reclaim} {
		n, ok := d.vals[field]
		if !ok {
			continue
		}
		if n.Kind == yamlv3.ScalarNode && n.Tag == "!!null" {
			*target = nil
			continue
		}
		if n.Kind != yamlv3.MappingNode {
			continue // replaced by a non-map; decoding the merged config reports it
		}
		if *target == nil {
			*target = emap{}
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if v.Kind == yamlv3.ScalarNode && v.Tag == "!!null" {
				delete(*target, k.Value)
				continue
			}
			(*target)[k.Value] = entry{val: v.Value, o: origin{file: d.file, line: k.Line}}
		}
	}
	if _, ok := d.pos[fieldTransition]; ok {
		*transition = origin{file: d.file, line: d.pos[fieldTransition]}
	}
	return merged, nil
}

// syncMaps makes the provenance maps agree with the decoded config: values come from the
// kubelet's view (kc); origins from m where the key is known.
func syncMaps(kc *kubeletv1beta1.KubeletConfiguration, m evictionMaps, fallback origin) evictionMaps {
	sync := func(vals map[string]string, prov emap) emap {
		if vals == nil {
			return nil
		}
		out := make(emap, len(vals))
		for k, v := range vals {
			e, ok := prov[k]
			if !ok {
				e = entry{o: fallback}
			}
			e.val = v
			out[k] = e
		}
		return out
	}
	return evictionMaps{
		hard: sync(kc.EvictionHard, m.hard), soft: sync(kc.EvictionSoft, m.soft),
		grace: sync(kc.EvictionSoftGracePeriod, m.grace), reclaim: sync(kc.EvictionMinimumReclaim, m.reclaim),
	}
}
