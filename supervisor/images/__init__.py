"""Images: references, documents and platforms, and moving images in and out of the daemon.

    reference.py   Docker's reference grammar and normalization
    manifest.py    OCI / Docker schema 2 manifests, indexes, configs; platforms; chain IDs; gc labels
    resolve.py     reading documents from content; target -> manifest for a platform; walking blobs
    unpack.py      layers -> snapshots named by chain ID (reused when present), gc labels recorded
    tarstream.py   streaming tar reader/writer (names checked, truncation detected)
    importer.py    OCI layout and docker-archive tars -> content + image records (one lease, all or nothing)
    exporter.py    images -> OCI layout tar that docker-archive readers also accept
    inspect.py     what an image is made of; whether it is complete and unpacked
    leasing.py     the temporary lease every multi-step job runs under
    transfer.py    the engine the dockyard.images.v1.Transfer service serves
"""
