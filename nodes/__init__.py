"""Node functions, grouped by concern."""
