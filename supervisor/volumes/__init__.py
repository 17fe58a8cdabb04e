"""Named volumes kept by the daemon (store.py) and the copy that seeds them from an image (copy.py)."""
