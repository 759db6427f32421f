"""Programs run inside the lab guest (stdlib only; some are imported on the host)."""
