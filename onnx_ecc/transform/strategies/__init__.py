"""The rerun strategy: fast-path checks and the decoding branch."""
