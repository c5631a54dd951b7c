package harness

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// LayeredImageTar writes a docker-archive image (what `docker save` writes; `docker load` and
// `ctr images import` both read it) named ref that looks pulled from a registry, with
// everything a storage driver has to get right:
//
//	layer 1: the busybox root filesystem;
//	layer 2: /data with a directory, a hard-linked pair (hl1, hl2), a setuid file, a file with
//	         a user.* extended attribute, 1 MiB of random data, a file to be deleted (gone)
//	         and a directory to be replaced (replace/old1, replace/old2);
//	layer 3: a whiteout deleting /data/gone, an opaque /data/replace holding only "new", and
//	         /data/added.
//
// A container from it sees: no /data/gone; /data/replace with only "new"; hl1 and hl2 one
// inode; suid with mode 04755; xattr carrying user.evictguard=layered. The image's command
// sleeps, so a container of it runs until stopped.
func LayeredImageTar(t testing.TB, ref string) string {
	t.Helper()
	base, err := os.ReadFile(BusyboxRootfsTar(t))
	if err != nil {
		t.Fatal(err)
	}
	mtime := time.Unix(1700000000, 0)
	layer := func(entries []tar.Header, data map[string][]byte) []byte {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		for _, h := range entries {
			h.ModTime = mtime
			if h.Typeflag == tar.TypeReg {
				h.Size = int64(len(data[h.Name]))
			}
			if err := tw.WriteHeader(&h); err != nil {
				t.Fatal(err)
			}
			if h.Typeflag == tar.TypeReg {
				if _, err := tw.Write(data[h.Name]); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	random := make([]byte, 1<<20)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range random {
		random[i] = byte(r.Uint32())
	}
	l2 := layer([]tar.Header{
		{Name: "data/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "data/dir/", Typeflag: tar.TypeDir, Mode: 0o750, Uid: 1000, Gid: 1000},
		{Name: "data/dir/a", Typeflag: tar.TypeReg, Mode: 0o644, Uid: 1000, Gid: 1000},
		{Name: "data/hl1", Typeflag: tar.TypeReg, Mode: 0o644},
		{Name: "data/hl2", Typeflag: tar.TypeLink, Linkname: "data/hl1"},
		{Name: "data/suid", Typeflag: tar.TypeReg, Mode: 0o4755},
		{Name: "data/xattr", Typeflag: tar.TypeReg, Mode: 0o644, PAXRecords: map[string]string{"SCHILY.xattr.user.evictguard": "layered"}},
		{Name: "data/big", Typeflag: tar.TypeReg, Mode: 0o644},
		{Name: "data/gone", Typeflag: tar.TypeReg, Mode: 0o644},
		{Name: "data/replace/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "data/replace/old1", Typeflag: tar.TypeReg, Mode: 0o644},
		{Name: "data/replace/old2", Typeflag: tar.TypeReg, Mode: 0o644},
	}, map[string][]byte{"data/dir/a": []byte("a\n"), "data/hl1": []byte("linked\n"), "data/suid": []byte("#!/bin/sh\n"),
		"data/xattr": []byte("x\n"), "data/big": random, "data/gone": []byte("deleted in layer 3\n"),
		"data/replace/old1": []byte("1\n"), "data/replace/old2": []byte("2\n")})
	l3 := layer([]tar.Header{
		{Name: "data/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "data/.wh.gone", Typeflag: tar.TypeReg, Mode: 0o644},
		{Name: "data/replace/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "data/replace/.wh..wh..opq", Typeflag: tar.TypeReg, Mode: 0o644},
		{Name: "data/replace/new", Typeflag: tar.TypeReg, Mode: 0o644},
		{Name: "data/added", Typeflag: tar.TypeReg, Mode: 0o644},
	}, map[string][]byte{"data/replace/new": []byte("new\n"), "data/added": []byte("added in layer 3\n")})

	digest := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
	layers := [][]byte{base, l2, l3}
	var diffIDs, paths []string
	files := map[string][]byte{}
	for _, l := range layers {
		d := digest(l)
		diffIDs = append(diffIDs, "sha256:"+d)
		paths = append(paths, d+"/layer.tar")
		files[d+"/layer.tar"] = l
	}
	cfg, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux", "created": mtime.UTC().Format(time.RFC3339),
		"config": map[string]any{"Cmd": []string{"/bin/sleep", "1000000"}, "WorkingDir": "/data"},
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs},
		"history": []any{
			map[string]any{"created_by": "busybox rootfs"},
			map[string]any{"created_by": "data: links, setuid, xattr, files to delete and replace"},
			map[string]any{"created_by": "whiteout, opaque directory"},
		},
	})
	cfgName := digest(cfg) + ".json"
	files[cfgName] = cfg
	manifest, _ := json.Marshal([]any{map[string]any{"Config": cfgName, "RepoTags": []string{ref}, "Layers": paths}})
	files["manifest.json"] = manifest

	out := filepath.Join(TempDir(t, "image"), "layered.tar")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	names := append([]string{"manifest.json", cfgName}, paths...)
	for _, n := range names {
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(files[n])), Typeflag: tar.TypeReg, ModTime: mtime}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(tw, bytes.NewReader(files[n])); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return out
}
