"""Container networking: CNI networks run with Debian's standard plugins, owned by the daemon.

Modules: ``cni`` (the plugin runner), ``netns`` (namespace files), ``networks`` (conflists in
the config directory, the default bridge, subnets), ``resolv`` (resolv.conf and hosts),
``counters`` (rx/tx from inside a netns), ``attachments`` (NetworkManager: attach, detach,
reconcile, with records on disk). See docs/design-notes.md, "Container networking".
"""
