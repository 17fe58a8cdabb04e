"""The daemon's side of running containers: bundles, shims, and the tasks they hold."""
