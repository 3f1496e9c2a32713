"""Browser-facing pages (camera live view), mounted by the daemon's HTTP server."""
