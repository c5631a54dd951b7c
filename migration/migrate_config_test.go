package migration

import (
	"strings"
	"testing"
)

func TestSetDockerDataRoot(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"legacy graph replaced in place (the incident in README.md)", `{"graph": "/data/docker", "storage-driver": "aufs"}`,
			"{\n  \"data-root\": \"/mnt/new\",\n  \"storage-driver\": \"aufs\"\n}\n"},
		{"data-root replaced, order and nested values kept", `{"log-driver":"json-file","log-opts":{"max-size":"10m","max-file":"3"},"data-root":"/var/lib/docker","debug":true,"n":1.50}`,
			"{\n  \"log-driver\": \"json-file\",\n  \"log-opts\": {\n    \"max-size\": \"10m\",\n    \"max-file\": \"3\"\n  },\n  \"data-root\": \"/mnt/new\",\n  \"debug\": true,\n  \"n\": 1.50\n}\n"},
		{"both keys: one data-root", `{"graph":"/a","x":1,"data-root":"/b"}`, "{\n  \"data-root\": \"/mnt/new\",\n  \"x\": 1\n}\n"},
		{"appended", `{"debug":false}`, "{\n  \"debug\": false,\n  \"data-root\": \"/mnt/new\"\n}\n"},
		{"empty file", ``, "{\n  \"data-root\": \"/mnt/new\"\n}\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := SetDockerDataRoot([]byte(tc.in), "/mnt/new")
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
	for _, bad := range []string{`[1]`, `{"a":`, `{"a":1} {}`} {
		if _, err := SetDockerDataRoot([]byte(bad), "/x"); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestSetContainerdRoot(t *testing.T) {
	const base = `# containerd config, managed by hand
version = 2
root = "/var/lib/containerd" # images live here
state = "/run/containerd"

[grpc]
  address = "/run/containerd/containerd.sock"
  # root = "not this one"

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  root = "/nested/is/not/top-level"
`
	tests := []struct {
		name, in, want string
	}{
		{"line edited, comment kept", base, strings.Replace(base, `root = "/var/lib/containerd" # images live here`, `root = "/data/containerd" # images live here`, 1)},
		{"inserted after version", "version = 2\nstate = \"/run/c\"\n[grpc]\n  address = \"/s\"\n", "version = 2\nroot = \"/data/containerd\"\nstate = \"/run/c\"\n[grpc]\n  address = \"/s\"\n"},
		{"inserted before the first table", "# c\n[grpc]\n  address = \"/s\"\n", "# c\nroot = \"/data/containerd\"\n[grpc]\n  address = \"/s\"\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := SetContainerdRoot([]byte(tc.in), "/data/containerd")
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
			root, _, _, err := parseContainerdConfig(got)
			if err != nil || root != "/data/containerd" {
				t.Errorf("re-parsed root %q, %v", root, err)
			}
		})
	}
	if _, err := SetContainerdRoot([]byte("root = [unclosed"), "/x"); err == nil {
		t.Error("invalid TOML: no error")
	}
	_, _, snap, err := parseContainerdConfig([]byte(base))
	if err != nil || snap != "overlayfs" {
		t.Errorf("snapshotter %q, %v", snap, err)
	}
}
