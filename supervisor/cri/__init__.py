"""Kubernetes CRI (runtime.v1): the domain side of the RuntimeService and ImageService."""
