"""Small shared helpers (progress bars and their logging set-up)."""
