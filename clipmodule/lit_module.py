"""Kept for one release: experiment YAMLs written before the re-layout name
`clipmodule.lit_module.build_network` / `ClipLitModule`; both now live in `clipmodule.train.module`."""

from clipmodule.train.module import ClipLitModule, build_network

__all__ = ["ClipLitModule", "build_network"]
