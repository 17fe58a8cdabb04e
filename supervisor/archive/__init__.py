"""Layer tars: apply one to a directory safely, diff two trees into one, (de)compress them.

apply.py        apply_layer(): whiteouts (overlay or delete), links, devices, xattrs, chroot-safe
diff.py         write_diff() of two full trees, the bytes containerd's differ writes
tarwrite.py     tar headers exactly as Go's archive/tar writes them
compression.py  media types, gzip/zstd detection, open_layer() / open_compressor()
resolve.py      the in-root path resolver every write goes through
hashing.py      digesting reader/writer (diff IDs)
"""
