"""HTTP routes the daemon serves (mounted by crisisbot/web/server.py)."""
