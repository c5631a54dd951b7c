// Package treecopy is the data-root migration's copy engine: it copies a directory tree with
// everything a container runtime's root holds (hard links, sparse files, device nodes,
// overlay whiteouts and xattrs, owners, modes, timestamps), copies again only what changed
// since a time mark, verifies the copy against the source (live, while the source is in
// use, and after the runtime stopped), and measures trees (usage, digest, copy rate).
//
// It reads the source tree and writes only under the destination it is given. It depends on
// the standard library and golang.org/x/sys only, so that the code that moves a node's data
// can be read and tested on its own.
package treecopy
