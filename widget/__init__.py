"""The browser widget: ES modules in `src/`, built into `dist/widget.min.js` by `build.mjs`, served by `routes.py`."""
