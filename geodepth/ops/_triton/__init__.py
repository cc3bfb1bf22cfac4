"""Triton GPU kernels behind ``geodepth.ops`` (they also run on CPU under ``TRITON_INTERPRET=1``)."""
