"""One rule per kind of layer: how it is protected inline."""
