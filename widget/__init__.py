"""The browser widget: sources in `src/`, built by `bundle.py`, served by `routes.py`."""
