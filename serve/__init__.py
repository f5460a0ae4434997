"""The Ray Serve application: `serve run serve.app:build_app checkpoint=DIR`, or `serve deploy serve/config.yaml`."""
