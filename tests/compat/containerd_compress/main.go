// Compress stdin to stdout with containerd's own compression.CompressStream (gzip or zstd):
// the reference the compat tests hold Dockyard's compressed layers to. containerd 1.6's
// differ refuses zstd diffs, so for zstd this is the only containerd code that writes them.
package main

import (
	"io"
	"os"

	"github.com/containerd/containerd/archive/compression"
)

func main() {
	kind := map[string]compression.Compression{"gzip": compression.Gzip, "zstd": compression.Zstd}[os.Args[1]]
	w, err := compression.CompressStream(os.Stdout, kind)
	if err == nil {
		_, err = io.Copy(w, os.Stdin)
	}
	if err == nil {
		err = w.Close()
	}
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(1)
	}
}
