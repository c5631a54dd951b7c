package kubeletcfg

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// DefaultConfigzURL is the local kubelet's /configz on its authenticated port
// (k/k@v1.37.2:pkg/kubelet/server/server.go InstallAuthRequiredHandlers).
const DefaultConfigzURL = "https://127.0.0.1:10250/configz"

// Configz is the eviction part of a kubelet's /configz answer.
type Configz struct {
	EvictionHard                     map[string]string `json:"evictionHard,omitempty"`
	EvictionSoft                     map[string]string `json:"evictionSoft,omitempty"`
	EvictionSoftGracePeriod          map[string]string `json:"evictionSoftGracePeriod,omitempty"`
	EvictionMinimumReclaim           map[string]string `json:"evictionMinimumReclaim,omitempty"`
	EvictionPressureTransitionPeriod string            `json:"evictionPressureTransitionPeriod,omitempty"`
}

// ParseConfigz reads a /configz body: {"kubeletconfig": {...}} (1.10+), or
// {"componentconfig": {...}} with evictionHard as a string (1.7).
func ParseConfigz(body []byte) (*Configz, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return nil, fmt.Errorf("configz: not JSON: %w", err)
	}
	if raw, ok := top["kubeletconfig"]; ok {
		var c Configz
		if err := json.Unmarshal(raw, &c); err != nil {
			return nil, fmt.Errorf("configz: kubeletconfig: %w", err)
		}
		return &c, nil
	}
	if raw, ok := top["componentconfig"]; ok {
		var old struct {
			EvictionHard, EvictionSoft, EvictionSoftGracePeriod, EvictionMinimumReclaim, EvictionPressureTransitionPeriod string
		}
		if err := json.Unmarshal(raw, &old); err != nil {
			return nil, fmt.Errorf("configz: componentconfig: %w", err)
		}
		c := &Configz{EvictionPressureTransitionPeriod: old.EvictionPressureTransitionPeriod}
		var err error
		if c.EvictionHard, err = ParseLegacyThresholds(old.EvictionHard); err != nil {
			return nil, fmt.Errorf("configz: evictionHard: %w", err)
		}
		if c.EvictionSoft, err = ParseLegacyThresholds(old.EvictionSoft); err != nil {
			return nil, fmt.Errorf("configz: evictionSoft: %w", err)
		}
		c.EvictionSoftGracePeriod, _ = parseLegacyPairs(old.EvictionSoftGracePeriod, "grace period")
		c.EvictionMinimumReclaim, _ = parseLegacyPairs(old.EvictionMinimumReclaim, "minimum reclaim")
		return c, nil
	}
	return nil, fmt.Errorf("configz: no kubeletconfig in answer")
}

// FetchConfigz reads /configz from an http(s) URL or, for anything else, a file (a node path
// is not mapped: it is a file of the caller's). TLS verification is skipped: the kubelet's
// serving certificate is usually self-signed and the intended target is the loopback address;
// the bearer token (if any) is then only sent to a server we cannot authenticate, so callers
// should pass a token only for 127.0.0.1 or a trusted path.
func FetchConfigz(ctx context.Context, target, token string) ([]byte, error) {
	if target == ConfigzViaAPIServer {
		return nil, fmt.Errorf("configz %q: reading through the API server takes a client configuration (APIServerConfigz); here give a URL or a file", target)
	}
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		data, err := os.ReadFile(target)
		if err != nil {
			return nil, fmt.Errorf("read configz file: %w", err)
		}
		return data, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, fmt.Errorf("configz request: %w", err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(token))
	}
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // self-signed kubelet cert on loopback, see above
		Proxy:           nil,
	}}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", target, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", target, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("get %s: %s: %s", target, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// liveConfigz reads and parses the /configz opts name, with its provenance.
func liveConfigz(ctx context.Context, opts Options) (*Configz, string, error) {
	var (
		body []byte
		src  string
		err  error
	)
	if a := opts.ConfigzAPIServer; a != nil {
		src = a.String()
		body, err = a.Fetch(ctx)
	} else {
		src = "configz " + opts.ConfigzURL
		body, err = FetchConfigz(ctx, opts.ConfigzURL, opts.ConfigzToken)
	}
	if err != nil {
		return nil, "", err
	}
	cz, err := ParseConfigz(body)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", strings.TrimPrefix(src, "configz "), err)
	}
	return cz, src, nil
}

// compareConfigz compares the computed maps (before the kubelet's own additions,
// allocatableMemory.available and containerfs.*, which /configz does not show) with /configz.
// An empty map and an absent one are equal: /configz omits empty maps.
func compareConfigz(c *Configz, m evictionMaps, transition time.Duration) []string {
	var out []string
	cmp := func(field string, computed emap, live map[string]string) {
		keys := map[string]bool{}
		for k := range computed {
			keys[k] = true
		}
		for k := range live {
			keys[k] = true
		}
		for _, k := range sortedKeys(keys) {
			ce, inC := computed[k]
			lv, inL := live[k]
			switch {
			case inC && !inL:
				out = append(out, fmt.Sprintf("%s[%s]: computed %q (%s) but configz has none", field, k, ce.val, ce.source()))
			case !inC && inL:
				out = append(out, fmt.Sprintf("%s[%s]: configz has %q but the computed settings have none", field, k, lv))
			case ce.val != lv:
				out = append(out, fmt.Sprintf("%s[%s]: computed %q (%s) but configz has %q", field, k, ce.val, ce.source(), lv))
			}
		}
	}
	cmp(fieldHard, m.hard, c.EvictionHard)
	cmp(fieldSoft, m.soft, c.EvictionSoft)
	cmp(fieldGrace, m.grace, c.EvictionSoftGracePeriod)
	cmp(fieldReclaim, m.reclaim, c.EvictionMinimumReclaim)
	if c.EvictionPressureTransitionPeriod != "" {
		if d, err := time.ParseDuration(c.EvictionPressureTransitionPeriod); err == nil && d != transition {
			out = append(out, fmt.Sprintf("%s: computed %s but configz has %s", fieldTransition, transition, d))
		}
	}
	return out
}
