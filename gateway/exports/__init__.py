"""Datasets built from reviewed traces and votes: eval lines and preference pairs (`formats`)."""
