// dockyard-compress compresses stdin to stdout the way containerd compresses layers: Go's
// compress/gzip at its default level, or klauspost's zstd encoder with its defaults. Encoders
// differ in the bytes they write for the same input, and a layer's digest is taken over those
// bytes, so the daemon runs this (built at install from Debian's Go sources, as containerd is)
// to give a change the layer digest containerd gives it. See docs/design-notes.md.
//
// Usage: dockyard-compress gzip|zstd <in >out
package main

import (
	"bufio"
	"compress/gzip"
	"fmt"
	"io"
	"os"

	"github.com/klauspost/compress/zstd"
)

func main() {
	if len(os.Args) != 2 || (os.Args[1] != "gzip" && os.Args[1] != "zstd") {
		fmt.Fprintln(os.Stderr, "usage: dockyard-compress gzip|zstd <in >out")
		os.Exit(2)
	}
	if err := compress(os.Args[1], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "dockyard-compress:", err)
		os.Exit(1)
	}
}

func compress(kind string, in io.Reader, out io.Writer) error {
	buffered := bufio.NewWriterSize(out, 1<<20)
	var w io.WriteCloser
	if kind == "gzip" {
		w = gzip.NewWriter(buffered)
	} else {
		z, err := zstd.NewWriter(buffered)
		if err != nil {
			return err
		}
		w = z
	}
	if _, err := io.CopyBuffer(w, in, make([]byte, 1<<20)); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return buffered.Flush()
}
