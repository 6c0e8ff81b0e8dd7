"""The machinery behind :class:`refnet.net.Net`.

``plan`` (which nodes run, shapes, liveness) -> ``fusion`` (float32 folding, activation fusion,
sibling convolutions) -> ``program`` (compiled steps, buffers, the run loop); ``threads``,
``budget`` and ``interrupt`` around a run; ``backward`` and ``vjp`` for gradients; ``imagesize``
and ``toplevel`` for the command line's guards.
"""
