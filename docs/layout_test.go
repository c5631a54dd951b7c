package docs

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// TestLayoutPointsDown: development.md's package table lists every product package of the
// module, and each imports only packages listed below it (or its own sub-packages' parents
// listed with it), so that the layout a newcomer reads is the one the compiler sees.
func TestLayoutPointsDown(t *testing.T) {
	b, err := os.ReadFile("development.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(b), "## Layout\n")
	if !ok {
		t.Fatal("development.md has no Layout section")
	}
	table, _, _ = strings.Cut(table, "\n## ")
	row := regexp.MustCompile("(?m)^\\| `([a-z/…]+)`(?: \\(\\+ `([a-z/]+)`\\))? \\|")
	pos := map[string]int{}
	for i, m := range row.FindAllStringSubmatch(table, -1) {
		for _, p := range m[1:] {
			if p != "" {
				pos[p] = i
			}
		}
	}
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "../...").Output()
	if err != nil {
		t.Skipf("go list: %v", err) // no go tool: nothing to compare with
	}
	const mod = "github.com/evictguard/evictguard/"
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg := strings.TrimPrefix(fields[0], mod)
		if beside(pkg) {
			continue
		}
		t.Run(pkg, func(t *testing.T) {
			at, ok := position(pos, pkg)
			if !ok {
				t.Fatalf("%s is not in development.md's layout table", pkg)
			}
			for _, imp := range fields[1:] {
				dep, ours := strings.CutPrefix(imp, mod)
				if !ours {
					continue
				}
				if dat, ok := position(pos, dep); ok && dat < at {
					t.Errorf("%s imports %s, which the table lists above it", pkg, dep)
				}
			}
		})
	}
}

// beside is what the table names in prose (deploy, e2e, hack, docs): not product packages.
func beside(pkg string) bool {
	for _, p := range []string{"deploy", "e2e", "hack", "docs"} {
		if pkg == p || strings.HasPrefix(pkg, p+"/") {
			return true
		}
	}
	return false
}

// position is pkg's row: its own, or that of internal/… for internal packages, or that of
// the nearest listed parent (monitor for monitor/feed, treecopy for treecopy/treecopytest).
func position(pos map[string]int, pkg string) (int, bool) {
	if strings.HasPrefix(pkg, "internal/") || pkg == "internal" {
		i, ok := pos["internal/…"]
		return i, ok
	}
	for p := pkg; p != "." && p != ""; p = parentDir(p) {
		if i, ok := pos[p]; ok {
			return i, ok
		}
	}
	return 0, false
}

func parentDir(p string) string {
	i := strings.LastIndex(p, "/")
	if i < 0 {
		return ""
	}
	return p[:i]
}
