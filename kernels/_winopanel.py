"""One-thread Winograd convs on small maps, panel by panel: GEMMs and output transform of 32
output channels at a time, on transformed weights laid out in the order they are read.

The plain one-thread path (:meth:`refnet.kernels.conv.Conv2dPlan._winograd`) runs the input
transform into ``v`` (nk, C_in, T), the nk GEMMs ``m[e] = u[e] @ v[e]`` (np.matmul: OpenBLAS,
which packs each u[e] afresh on every call) into ``m`` (nk, C_out, T), then the output transform.
In a forward pass the transformed weights u (16/9 or 36/9 times the conv's weights) come from
memory, and m (SqueezeNet's 13x13 64 -> 256: 800 KB) goes out to L2/L3 and back. With a
memory-streaming neighbour on the other core SqueezeNet's fire8/9 expand3x3 grew 370 -> 540 us
each, onnxruntime's direct convs ~20 us (issue 17, session 9).

Here :func:`pack_panels` lays u out at plan time in groups of row panels of 32 output channels,
``up[g, e * group + b, k, :] = u[e, 32 (g group + b) : + 32, k]`` (the packed GEMM's k-major
panels of :mod:`refnet.kernels._packgemm`; the nk elements' panels of one group side by side): the
call reads the weights once, front to back, and while it computes one element's panel it
prefetches the one :data:`AHEAD` on into L1 (``_tile``'s next-panel prefetch, :data:`L1`).
:func:`wino_panels` runs per image: the input transform of all its tiles into v (which then stays
in L2: at most :data:`MAX_V_BYTES`), and per group the nk GEMMs (32 x 7 register tiles,
:func:`refnet.kernels._packgemm._tile`) into a block ``mb`` (nk, 32 group, T) of at most
:data:`MB_BYTES` -- 200 KB on 13x13 64 -> 256, in the plans' ``wino_m`` scratch, so it stays in
L2 -- and at once the output transform of the group's channels (bias, activation) into y. No
per-call weight packing, no m round trip. F(2,3) only (:data:`KINDS`): SqueezeNet's fire6..9
expand3x3 (13x13, 48 -> 192 and 64 -> 256).

Measured (one thread; rerun: ``bench/wino_cold.py``, ``bench/steps_ab.py squeezenet
refnet.kernels._winopanel:PANELS --rounds 300``, with and without ``taskset -c 1 python stream.py
64`` -- a process copying two 64 MiB arrays forever -- on the other core): one conv with the caches
cold (64 MiB written before each call), us median panels / np.matmul path / onnxruntime's Conv:
48 -> 192 13x13 333 / 379 / 429 (hot 248 / 253 / 281), 64 -> 256 449 / 503 / 631 (hot 384 / 390
/ 481), in rounds with more load on the machine 0.72-0.82 of np.matmul's cold time. In the net,
paired per-step medians, with the streaming neighbour: fire6..9 expand3x3 361 / 347 / 569 / 562
-> 294 / 268 / 416 / 395 us, pass CPU time B/A 0.931 (8.08 -> 7.55 ms); quiet, pass 1.004 (the
four convs within +-20 us; 0.989 / 1.012 with the variants' order swapped). Tried: a group of all
row panels (m of the old size) 1.2-1.4x the cold time; the groups' GEMMs on the BLAS from numba
(cblas_sgemm per element and group: as fast hot, 30-46 us slower per conv in the net: 4x the
BLAS calls); a prefetch of the first panels before the input transform, 2 panels ahead (no
change); no prefetch (20-55 us slower per conv); a scratch block of its own (the first panel conv
of a pass 30-45 us slower: ``wino_m`` is warm from the Winograd conv before).

Rounding: each output of a GEMM is the packed GEMM's blocked sum (k in order, blocks of 128), not
OpenBLAS's order: float32 rounding-level differences from the np.matmul path.
Under ``NUMBA_DISABLE_JIT=1`` the same code runs as Python (tests on small shapes); the conv plan
takes it only with numba jitting, outside ``numpy_kernels()``, and with one thread.
"""

from __future__ import annotations

import numpy as np

from refnet.kernels import _packgemm
from refnet.kernels._jit import JIT_OPTIONS
from refnet.kernels._lazyjit import lazy_njit
from refnet.kernels.conv import _scratch, _wino4_in, _wino4_out, _wino_in, _wino_out

__all__ = ["ENV", "PANELS", "AHEAD", "L1", "MAX_V_BYTES", "MB_BYTES", "KINDS", "fits", "group_of", "pack_panels",
           "wino_panels", "WinoPanels"]

# REFNET_WINO_PANELS=0: new one-thread Winograd plans keep the np.matmul / WinoGemms path; PANELS
# False (read at each call) runs a plan that has the panels on that path (A/B).
ENV = "REFNET_WINO_PANELS"
PANELS = _packgemm.enabled(ENV)
# the element panel prefetched while one is computed: this many panels on (1: the next)
AHEAD = 1
# ... into all cache levels (prefetcht0; read at each call; False: prefetcht1, L2)
L1 = True
# the whole image's transformed input v (nk * C_in * T * 4 bytes) at most this large (it is read
# once per row panel: it must stay in L2, 1 MB here)
MAX_V_BYTES = 1 << 18
MIN_COUT = 32
# the element counts (nk) that take the panels: F(2,3) only. SqueezeNet's 27x27 32 -> 128 F(4,3)
# (36 GEMMs with K = 32: the 32 x 7 tiles' fixed cost per tile is ~1/3 of a tile there) measured
# slower in the net, quiet (bench/steps_ab.py: 303 -> 370-405 us) and with a memory-streaming
# neighbour (430 -> 467 and 409 -> 369 us, its two convs; again after the scratch and L1 changes,
# paired 300 rounds, b"\x10" vs b"\x10$" for KINDS: quiet +44 / +34 us, stream +65 / +45). F(2,3)
# on that map (v 400 KB) lost too: cold 668 vs 558 us.
KINDS = (16,)
# the GEMM block of a group of row panels (nk, 32 group, T), whose output transform runs as one
# call, at most this many bytes (one panel at least)
MB_BYTES = 1 << 18

_wino_in_s = _wino_in._serial
_wino_out_s = _wino_out._serial
_wino4_in_s = _wino4_in._serial
_wino4_out_s = _wino4_out._serial
_tile = _packgemm._tile


def fits(dtype: np.dtype, nk: int, c: int, co: int, tiles: int) -> bool:
    """Whether a one-thread Winograd plan (nk = 16 or 36, C_in ``c``, C_out ``co``, ``tiles``
    tiles per image, the image one band) runs :func:`wino_panels`: float32, ``$REFNET_WINO_PANELS``
    not 0 at plan time, nk in :data:`KINDS`, v within :data:`MAX_V_BYTES` (:data:`PANELS` is read
    at each call)."""
    return (_packgemm.enabled(ENV) and nk in KINDS and np.dtype(dtype) == np.float32 and co >= MIN_COUT
            and nk * c * tiles * 4 <= MAX_V_BYTES)


def pack_panels(u: np.ndarray, group: int = 1) -> np.ndarray:
    """u (nk, M, K) -> (G, nk * group, K, 32) float32, G = ceil(ceil(M / 32) / group): for each
    group g of ``group`` row panels, element e, panel b of the group, the rows 32 (g group + b) ..
    + 31 of u[e] k-major (:func:`refnet.kernels._packgemm.pack_weights`), zero-padded rows and
    panels."""
    nk, m, k = u.shape
    npan = -(-m // 32)
    ng = -(-npan // group)
    wp = np.stack([_packgemm.pack_weights(ue) for ue in u])  # (nk, npan, K, 32)
    out = np.zeros((ng * group, nk, k, 32), np.float32)
    out[:npan] = wp.transpose(1, 0, 2, 3)
    return np.ascontiguousarray(out.reshape(ng, group, nk, k, 32).transpose(0, 2, 1, 3, 4).reshape(ng, nk * group,
                                                                                                 k, 32))


def group_of(nk: int, npan: int, tiles: int) -> int:
    """Row panels per group: as many as keep the GEMM block (nk, 32 group, T) within
    :data:`MB_BYTES`, groups of balanced sizes."""
    most = max(1, min(npan, MB_BYTES // (nk * 32 * tiles * 4)))
    return -(-npan // -(-npan // most))


_fast = lazy_njit(**{**JIT_OPTIONS, "fastmath": {"contract"}, "boundscheck": False})


@_fast
def wino_panels(x, up, y, b, act, slope, six, pt, pl, th_n, tw_n, v, mb, yb, kofs, coffs, pf, ahead):  # noqa: PLR0913
    """Winograd F(2,3) (``v.shape[0]`` = nk = 16) or F(4,3) (36) of x (N, C, H, W) into y (N, C_out,
    Ho, Wo), each image whole (tile rows 0 .. th_n): input transform into v (nk, C, T), then per
    group of row panels of ``up`` (:func:`pack_panels`: G, nk * group, C, 32) the GEMMs into mb (nk,
    32 group, T) and the output transform of the group's channels (bias ``b`` and ``slope``
    padded to G * group * 32 channels, activation ``act`` / ``six`` as the conv kernels); a last
    group of fewer channels goes through ``yb`` (32 group, Ho, Wo). kofs / coffs:
    :func:`refnet.kernels._packgemm.matrix_offsets` (C, T). ``pf``: the prefetch of the element
    panel ``ahead`` on (0 off, 1 into L2, 2 into L1)."""
    n = x.shape[0]
    nk, c, t = v.shape
    co = y.shape[1]
    ng, npg = up.shape[0], up.shape[1]
    group = npg // nk
    rg = 32 * group  # channels per group
    kp = c * 32  # elements of one element panel
    upf = up.reshape(up.size)
    vf = v.reshape(v.size)
    mf = mb.reshape(mb.size)
    ntiles = (t + 6) // 7
    share = kp // ntiles
    pfs = np.uint64((32 << 16) // ntiles)
    total = ng * npg
    for i in range(n):
        if nk == 16:
            _wino_in_s(x[i], pt, pl, 0, th_n, tw_n, 0, v)
        else:
            _wino4_in_s(x[i], pt, pl, 0, th_n, tw_n, 0, v)
        for g in range(ng):
            o0 = g * rg
            wg = up[g]
            for e in range(nk):
                xf = vf[e * c * t:(e + 1) * c * t]
                for bp in range(group):
                    rows = min(32, co - o0 - 32 * bp)
                    if rows <= 0:
                        break
                    q = g * npg + e * group + bp + ahead
                    pfe = np.int64(pf) if q < total and ahead > 0 else np.int64(0)
                    _tile(wg, xf, kofs, coffs, e * group + bp, 0, t, mf, t, rows, upf,
                          np.uint64(q * kp if pfe else 0), np.uint64(share), pfs, pfe, True)
            full = o0 + rg <= co
            yo = y[i, o0:o0 + rg] if full else yb
            if nk == 16:
                _wino_out_s(mb, b[o0:o0 + rg], act, slope[o0:o0 + rg], six, 0, th_n, tw_n, 0, yo)
            else:
                _wino4_out_s(mb, b[o0:o0 + rg], act, slope[o0:o0 + rg], six, 0, th_n, tw_n, 0, yo)
            if not full:
                y[i, o0:co] = yb[:co - o0]


def _pf() -> int:
    """The tiles' prefetch mode: 0 off (the packed GEMMs' PREFETCH off), 2 into L1 (:data:`L1`), 1
    into L2."""
    return (2 if L1 else 1) if _packgemm.PREFETCH else 0


class WinoPanels:
    """The panel path of one Winograd plan (u (nk, C_out, C_in), bias and slope per output
    channel, padded here to whole panels: the last panel's transform reads 32 channels):
    ``g(x, y, act, six)``, its scratch the conv kernels' per-thread arrays (wino_v, wino_m, wino_yb)."""

    def __init__(self, u: np.ndarray, b: np.ndarray, slope: np.ndarray, y_shape: tuple, pad: tuple, th_n: int,
                 tw_n: int) -> None:
        self.nk, self.co, self.c = u.shape
        self.group = group_of(self.nk, -(-self.co // 32), th_n * tw_n)
        self.up = pack_panels(u, self.group)
        cpad = self.up.shape[0] * self.group * 32
        self.b, self.slope = np.zeros(cpad, np.float32), np.zeros(cpad, np.float32)
        self.b[: self.co], self.slope[: self.co] = b, slope
        self.pt, self.pl = pad[0], pad[1]
        self.th_n, self.tw_n = th_n, tw_n
        self.t = th_n * tw_n
        self.kofs, self.coffs = _packgemm.matrix_offsets(self.c, self.t)
        self.hw = tuple(y_shape[2:])

    @property
    def nbytes(self) -> int:
        return int(self.up.nbytes)

    def __call__(self, x: np.ndarray, y: np.ndarray, act: int, six: np.float32) -> None:
        """y = act(conv(x) + b)."""
        nk, c, t = self.nk, self.c, self.t
        f32 = np.dtype(np.float32)
        v = _scratch(nk * c * t, f32, "wino_v").reshape(nk, c, t)
        rg = 32 * self.group
        mb = _scratch(nk * rg * t, f32, "wino_m").reshape(nk, rg, t)
        yb = _scratch(rg * self.hw[0] * self.hw[1], f32, "wino_yb").reshape(rg, *self.hw)
        wino_panels(x, self.up, y, self.b, act, self.slope, six, self.pt, self.pl, self.th_n, self.tw_n, v, mb, yb,
                    self.kofs, self.coffs, _pf(), AHEAD)
