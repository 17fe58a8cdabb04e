"""Images: references, and (later) manifests, indexes, configs, platforms, unpack and archives."""
