"""Peak memory of a step on torch's CPU allocator, read from the profiler's allocation records (the benches'
shared measure: bench/accumulation.py, bench/siglip_memory.py)."""

from __future__ import annotations

from collections.abc import Callable

from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile


def peak_allocated_bytes(step: Callable[[], None]) -> int:
    """The highest number of bytes torch's CPU allocator held during `step` above the level before it, from
    the profiler's allocation records, each allocation and free at the time it happened. (Summing the ops'
    self memory in start order instead undercounts: an enclosing event, such as an autograd Function's forward
    or a backward node, books the frees made inside it at its start, before its children allocate.)"""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    records = [event for event in prof.profiler.kineto_results.events()
               if event.name() == "[memory]" and event.device_type() == DeviceType.CPU]
    level = peak = 0
    for event in sorted(records, key=lambda event: event.start_ns()):
        level += event.nbytes()
        peak = max(peak, level)
    return peak
