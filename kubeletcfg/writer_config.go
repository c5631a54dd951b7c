package kubeletcfg

import (
	"bytes"
	"errors"
	"fmt"

	yamlv3 "sigs.k8s.io/yaml/goyaml.v3"
)

// RewriteConfigFileEvictionHard replaces (or adds) the top-level evictionHard mapping of a
// KubeletConfiguration YAML file with the complete map hard, keeping the other keys and their
// comments. Values are written as quoted strings.
func RewriteConfigFileEvictionHard(data []byte, hard map[string]string) ([]byte, error) {
	var doc yamlv3.Node
	if err := yamlv3.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("parse YAML: %w", err)
	}
	if doc.Kind != yamlv3.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yamlv3.MappingNode {
		return nil, errors.New("not a single YAML mapping document")
	}
	top := doc.Content[0]
	m := &yamlv3.Node{Kind: yamlv3.MappingNode}
	for _, k := range sortedKeys(hard) {
		m.Content = append(m.Content,
			&yamlv3.Node{Kind: yamlv3.ScalarNode, Value: k},
			&yamlv3.Node{Kind: yamlv3.ScalarNode, Value: hard[k], Style: yamlv3.DoubleQuotedStyle})
	}
	found := false
	for i := 0; i+1 < len(top.Content); i += 2 {
		if top.Content[i].Value == fieldHard {
			m.HeadComment = top.Content[i+1].HeadComment
			top.Content[i+1] = m
			found = true
		}
	}
	if !found {
		top.Content = append(top.Content, &yamlv3.Node{Kind: yamlv3.ScalarNode, Value: fieldHard}, m)
	}
	var b bytes.Buffer
	enc := yamlv3.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, fmt.Errorf("encode YAML: %w", err)
	}
	_ = enc.Close()
	return b.Bytes(), nil
}
