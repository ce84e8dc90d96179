"""Dataset loaders (one module per concern); the public entry point is :mod:`training.data`."""
