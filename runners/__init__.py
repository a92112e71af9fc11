"""Training runner (issue 3)."""
