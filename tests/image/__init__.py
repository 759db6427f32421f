"""The image tier: the agent's container image, built and run as the DaemonSet runs it."""
