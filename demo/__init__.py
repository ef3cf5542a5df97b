"""The demo's own steps (demo.sh runs them): python -m demo.<name> from the repo root."""
