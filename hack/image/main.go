// Command image writes evictguard's container image as an OCI image archive, without a
// registry or a container engine: `make image` builds the static binary and runs this.
//
// The image is one layer holding /usr/local/bin/evictguard (and an empty /tmp), with the
// binary as its entrypoint: no shell, no libc, no package manager — the binary is static
// (CGO_ENABLED=0) and reads everything it needs of the node through /host.
//
// The archive is an OCI image layout (oci-layout, index.json, blobs/sha256/…) that also
// carries a Docker-compatible manifest.json, the format `docker save` has written since
// Docker 25: `ctr -n k8s.io images import` reads the layout, and older Docker engines'
// `docker load` read manifest.json. go-containerregistry builds the image and the layout
// (digests, media types, config); only the final tar of the layout directory is written
// here, because go-containerregistry writes either a layout directory or a Docker tarball,
// not the combined archive.
//
// Reproducible: every timestamp (layer entries, config, history) is --created (make passes
// the commit's time, as SOURCE_DATE_EPOCH would), owners are 0:0 and entries are sorted, so
// the same binary gives the same digests and the same archive bytes.
package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const binPath = "usr/local/bin/evictguard"

func main() {
	binary := flag.String("binary", "bin/evictguard-static", "the static evictguard binary to put in the image")
	out := flag.String("out", "bin/evictguard-image.tar", "the OCI image archive to write")
	ref := flag.String("ref", "", "the image's name and tag (default: the contents of deploy/image)")
	created := flag.String("created", "", "the image's time in Unix seconds (default $SOURCE_DATE_EPOCH, else 0)")
	revision := flag.String("revision", "", "org.opencontainers.image.revision (the commit)")
	source := flag.String("source", "https://github.com/evictguard/evictguard", "org.opencontainers.image.source")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("image: ")
	if *ref == "" {
		b, err := os.ReadFile("deploy/image")
		if err != nil {
			log.Fatal(err)
		}
		*ref = strings.TrimSpace(string(b))
	}
	if *created == "" {
		*created = os.Getenv("SOURCE_DATE_EPOCH")
	}
	secs := int64(0)
	if *created != "" {
		var err error
		if secs, err = strconv.ParseInt(*created, 10, 64); err != nil {
			log.Fatalf("--created %q: %v", *created, err)
		}
	}
	digest, size, err := build(*binary, *out, *ref, time.Unix(secs, 0).UTC(), *revision, *source)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("image: %s %s %s (%.1f MiB)\n", *out, *ref, digest, float64(size)/(1<<20))
}

// build writes the archive and returns the image manifest's digest and the archive's size.
func build(binary, out, refText string, created time.Time, revision, source string) (v1.Hash, int64, error) {
	ref, err := name.NewTag(refText)
	if err != nil {
		return v1.Hash{}, 0, fmt.Errorf("image name %q: %w", refText, err)
	}
	bin, err := os.ReadFile(binary)
	if err != nil {
		return v1.Hash{}, 0, fmt.Errorf("read the binary: %w", err)
	}
	layerTar, err := rootfs(bin, created)
	if err != nil {
		return v1.Hash{}, 0, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return v1.Hash{}, 0, fmt.Errorf("layer: %w", err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, History: v1.History{
		Created: v1.Time{Time: created}, CreatedBy: "make image (hack/image)", Comment: "the static evictguard binary"}})
	if err != nil {
		return v1.Hash{}, 0, fmt.Errorf("append layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return v1.Hash{}, 0, err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = runtime.GOARCH, "linux"
	cf.Created = v1.Time{Time: created}
	version := ref.TagStr()
	labels := map[string]string{
		"org.opencontainers.image.title":    "evictguard",
		"org.opencontainers.image.source":   source,
		"org.opencontainers.image.version":  version,
		"org.opencontainers.image.revision": revision,
		"org.opencontainers.image.licenses": "Apache-2.0",
		"org.opencontainers.image.created":  created.Format(time.RFC3339),
	}
	cf.Config = v1.Config{
		Entrypoint: []string{"/" + binPath},
		Cmd:        []string{"status"},
		User:       "0:0",
		WorkingDir: "/",
		Env:        []string{"PATH=/usr/local/bin"},
		Labels:     labels,
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return v1.Hash{}, 0, fmt.Errorf("config: %w", err)
	}
	digest, err := img.Digest()
	if err != nil {
		return v1.Hash{}, 0, err
	}

	dir, err := os.MkdirTemp(filepath.Dir(out), ".image-")
	if err != nil {
		return v1.Hash{}, 0, err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return v1.Hash{}, 0, fmt.Errorf("OCI layout: %w", err)
	}
	// containerd names an imported image after io.containerd.image.name; the OCI annotation
	// holds the tag, as `docker save` writes it.
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		"io.containerd.image.name":          ref.Name(),
		"org.opencontainers.image.ref.name": version,
	})); err != nil {
		return v1.Hash{}, 0, fmt.Errorf("OCI layout: %w", err)
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return v1.Hash{}, 0, err
	}
	ld, err := layer.Digest()
	if err != nil {
		return v1.Hash{}, 0, err
	}
	manifest, err := json.Marshal([]map[string]any{{
		"Config":   "blobs/sha256/" + cfgName.Hex,
		"RepoTags": []string{ref.Name()},
		"Layers":   []string{"blobs/sha256/" + ld.Hex},
	}})
	if err != nil {
		return v1.Hash{}, 0, err
	}
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), manifest, 0o644); err != nil {
		return v1.Hash{}, 0, err
	}
	size, err := tarDir(dir, out, created)
	return digest, size, err
}

// rootfs is the image's only layer: /tmp (1777, for libraries that want a temp dir on a
// read-only root) and the binary.
func rootfs(bin []byte, mtime time.Time) ([]byte, error) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	dirs := []string{"tmp/", "usr/", "usr/local/", "usr/local/bin/"}
	for _, d := range dirs {
		mode := int64(0o755)
		if d == "tmp/" {
			mode = 0o1777
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: mode, ModTime: mtime, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: binPath, Mode: 0o755, Size: int64(len(bin)), ModTime: mtime, Format: tar.FormatPAX}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(bin); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// tarDir writes the files of dir, sorted, with fixed times and owners, to out atomically.
func tarDir(dir, out string, mtime time.Time) (int64, error) {
	var names []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		names = append(names, rel)
		return nil
	})
	if err != nil {
		return 0, err
	}
	sort.Strings(names)
	tmp := out + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return 0, err
	}
	defer os.Remove(tmp)
	tw := tar.NewWriter(f)
	for _, n := range names {
		st, err := os.Lstat(filepath.Join(dir, n))
		if err != nil {
			return 0, err
		}
		h := &tar.Header{Name: n, ModTime: mtime, Mode: 0o644, Format: tar.FormatPAX}
		if st.IsDir() {
			h.Typeflag, h.Name, h.Mode = tar.TypeDir, n+"/", 0o755
			if err := tw.WriteHeader(h); err != nil {
				return 0, err
			}
			continue
		}
		h.Typeflag, h.Size = tar.TypeReg, st.Size()
		if err := tw.WriteHeader(h); err != nil {
			return 0, err
		}
		src, err := os.Open(filepath.Join(dir, n))
		if err != nil {
			return 0, err
		}
		_, err = io.Copy(tw, src)
		src.Close()
		if err != nil {
			return 0, err
		}
	}
	if err := tw.Close(); err != nil {
		return 0, err
	}
	if err := f.Sync(); err != nil {
		return 0, err
	}
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	return st.Size(), os.Rename(tmp, out)
}
