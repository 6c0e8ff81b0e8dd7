"""Kernels: detection (placeholder; filled in by the kernel library work)."""

__all__: list[str] = []
