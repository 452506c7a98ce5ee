"""Quill, a demo chat app that streams a fake LLM and carries the Backchannel widget."""

from demo_app.app import create_app

__all__ = ["create_app"]
