"""The CRI streaming server: Exec, Attach and PortForward sessions behind one-time URLs."""
