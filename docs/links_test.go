package docs

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// readmeMaxLines keeps the README a page: what evictguard is, the set-up commands, install in
// brief and an index of docs/ (issue #18). Everything else belongs in docs/.
const readmeMaxLines = 250

func TestReadmeIsAPage(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), "\n"); n > readmeMaxLines {
		t.Errorf("README.md has %d lines, at most %d: move the detail into docs/", n, readmeMaxLines)
	}
}

// markdownFiles is README.md and every Markdown file under docs/, as paths from this directory.
func markdownFiles(t *testing.T) []string {
	t.Helper()
	files := []string{"../README.md"}
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".md") {
			files = append(files, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

var (
	fenceRE   = regexp.MustCompile("^\\s*(```|~~~)")
	headingRE = regexp.MustCompile(`^(#{1,6})\s+(.*?)\s*#*\s*$`)
	// An inline link or image: [text](target) or [text](target "title").
	linkRE = regexp.MustCompile(`!?\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)
	// Explicit anchors kept for links to sections that moved: <a id="…"> or <a name="…">.
	htmlAnchorRE = regexp.MustCompile(`<a\s+(?:id|name)="([^"]+)"`)
	inlineLinkRE = regexp.MustCompile(`\[([^\]]*)\]\([^)]*\)`)
	htmlTagRE    = regexp.MustCompile(`<[^>]+>`)
)

// slug is GitHub's anchor for a heading: the rendered text lower-cased, every character but
// letters, digits, '-', '_' and spaces dropped, spaces turned into '-'.
func slug(heading string) string {
	text := inlineLinkRE.ReplaceAllString(heading, "$1")
	text = htmlTagRE.ReplaceAllString(text, "")
	var b strings.Builder
	for _, r := range strings.ToLower(text) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsMark(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// mdDoc is what the link check needs of one Markdown file: its anchors and its links with
// their line numbers. Fenced code blocks are skipped.
type mdDoc struct {
	anchors map[string]bool
	links   []mdLink
}

type mdLink struct {
	line   int
	target string
}

func parseMarkdown(text string) mdDoc {
	d := mdDoc{anchors: map[string]bool{}}
	seen := map[string]int{}
	inFence := false
	for i, line := range strings.Split(text, "\n") {
		if fenceRE.MatchString(line) {
			inFence = !inFence
			continue
		}
		if inFence {
			continue
		}
		if m := headingRE.FindStringSubmatch(line); m != nil {
			s := slug(m[2])
			// GitHub numbers repeated headings: x, x-1, x-2, …
			if n := seen[s]; n > 0 {
				d.anchors[s+"-"+strconv.Itoa(n)] = true
			} else {
				d.anchors[s] = true
			}
			seen[s]++
		}
		for _, m := range htmlAnchorRE.FindAllStringSubmatch(line, -1) {
			d.anchors[m[1]] = true
		}
		for _, m := range linkRE.FindAllStringSubmatch(line, -1) {
			d.links = append(d.links, mdLink{line: i + 1, target: m[1]})
		}
	}
	return d
}

func TestSlug(t *testing.T) {
	for _, tc := range []struct{ heading, want string }{
		{"How it works", "how-it-works"},
		{"Policy reference (`--policy FILE`, YAML, strict)", "policy-reference---policy-file-yaml-strict"},
		{"How `apply` works", "how-apply-works"},
		{"Migrating the runtime's data root", "migrating-the-runtimes-data-root"},
		{"systemd (any node, no Kubernetes access needed)", "systemd-any-node-no-kubernetes-access-needed"},
		{"Prediction: time to eviction", "prediction-time-to-eviction"},
		{"See [the docs](docs/) — now", "see-the-docs--now"},
		{"snake_case stays", "snake_case-stays"},
	} {
		t.Run(tc.heading, func(t *testing.T) {
			if got := slug(tc.heading); got != tc.want {
				t.Errorf("slug(%q) = %q, want %q", tc.heading, got, tc.want)
			}
		})
	}
}

// TestLinks: every relative link in README.md and docs/**/*.md points at a file or directory
// in the repository, and every #anchor into a Markdown file (or within the same file) at a
// heading or an explicit <a id> there. Absolute URLs are not fetched.
func TestLinks(t *testing.T) {
	files := markdownFiles(t)
	docs := map[string]mdDoc{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		docs[filepath.Clean(f)] = parseMarkdown(string(b))
	}
	for _, f := range files {
		t.Run(filepath.ToSlash(filepath.Clean(f)), func(t *testing.T) {
			d := docs[filepath.Clean(f)]
			for _, l := range d.links {
				if strings.Contains(l.target, "://") || strings.HasPrefix(l.target, "mailto:") {
					continue
				}
				path, anchor, _ := strings.Cut(l.target, "#")
				target := filepath.Clean(f)
				if path != "" {
					target = filepath.Join(filepath.Dir(f), path)
					if _, err := os.Stat(target); err != nil {
						t.Errorf("%s:%d: link %q: %v", f, l.line, l.target, err)
						continue
					}
				}
				if anchor == "" || !strings.HasSuffix(target, ".md") {
					continue
				}
				td, ok := docs[target]
				if !ok {
					b, err := os.ReadFile(target)
					if err != nil {
						t.Errorf("%s:%d: link %q: %v", f, l.line, l.target, err)
						continue
					}
					td = parseMarkdown(string(b))
				}
				if !td.anchors[anchor] {
					t.Errorf("%s:%d: link %q: %s has no heading or anchor %q", f, l.line, l.target, target, anchor)
				}
			}
		})
	}
}
