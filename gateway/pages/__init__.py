"""Server-rendered pages (the dashboard; the reviewer page reuses its frame, sign-in and static files)."""
