"""Making images: `commit` of a container's changes, the shared image writer, Dockerfile builds."""
