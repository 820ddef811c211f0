"""The permutohedral lattice (Adams, Baek & Davis, Eurographics 2010) in plain torch.

Approximate Gaussian filtering in a ``d``-dimensional feature space,
``out_i = sum_j exp(-|f_i - f_j|^2 / 2) v_j`` (features already divided by their standard
deviations), in O(N d^2 + M d C) for N points, C value channels and M lattice vertices — the
algorithm pydensecrf uses for its dense-CRF messages, written here as pure tensor functions
(CPU or CUDA, float32, no compiled extension), one function per step:

* :func:`elevate` — embed ``(B, N, d)`` features in the hyperplane ``sum = 0`` of R^(d+1), scaled so
  that one blur pass below has (about) unit standard deviation in feature units;
* :func:`enclosing_simplex` — the remainder-0 vertex and the rank permutation of each point's simplex;
* :func:`barycentric` — the point's ``d + 1`` barycentric weights in that simplex;
* :func:`simplex_keys` — the integer lattice coordinates of the ``d + 1`` vertices;
* :func:`build_lattice` — all of the above plus the vertex table (unique packed int64 keys) and the
  blur neighbours (searchsorted in the sorted keys); returns a :class:`Lattice`. It depends only on
  the features, so it is built once and reused for any number of value matrices;
* :func:`splat` / :func:`blur` / :func:`slice_values` — the three linear steps, each a sparse CSR
  product built once with the lattice (splat ``(M, B*N)``, one blur ``(M, M)`` per direction,
  slice ``(B*N, M)``); :func:`lattice_filter` chains them; :func:`gaussian_filter` builds and
  filters in one call; :func:`rescale` folds per-point factors (a normalisation, a weight) into
  the splat and slice.

Inputs: features ``(B, N, d)`` float, finite, any range (keys are packed into 62-bit integers;
coordinates too spread for that take a slower row-wise ``torch.unique``); values ``(B, N, C)``
float. CPU sparse products run on one thread (see ``_sparse_threads``).

Conventions kept from pydensecrf's ``permutohedral.cpp`` (so our messages have its magnitudes):
feature scale ``sqrt(2/3) (d+1) / sqrt((i+1)(i+2))`` per elevated axis; blur ``[1/2, 1, 1/2]``
along each of the ``d + 1`` lattice directions in order 0..d, a missing neighbour counting as 0;
the slice multiplied by ``alpha = 1 / (1 + 2^-d)``. Images of a batch share one vertex table
(the batch index is part of the key), so a batch costs one splat/blur/slice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
from dataclasses import dataclass

import torch

from ..core.errors import InvalidInputError

__all__ = ["Lattice", "elevate", "enclosing_simplex", "barycentric", "simplex_keys", "build_lattice", "splat",
           "blur", "slice_values", "rescale", "lattice_filter", "gaussian_filter"]


def _check_features(features) -> torch.Tensor:
    if not isinstance(features, torch.Tensor):
        raise InvalidInputError(f"features must be a torch tensor (B, N, d), got {type(features).__name__}")
    if features.dim() != 3 or min(features.shape) < 1:
        raise InvalidInputError(f"features must be (B, N, d) with B, N, d >= 1, got shape {tuple(features.shape)}")
    if not features.is_floating_point():
        raise InvalidInputError(f"features must be float, got dtype {features.dtype}")
    if not bool(torch.isfinite(features).all()):
        raise InvalidInputError("features contain non-finite values")
    return features.to(torch.float32)


def elevate(features: torch.Tensor) -> torch.Tensor:
    """Embed ``(B, N, d)`` float features (any real values, in units of the filter's standard
    deviation) into the hyperplane ``x_0 + ... + x_d = 0``: returns float32 ``(B, N, d + 1)``."""
    f = _check_features(features)
    d = f.shape[-1]
    i = torch.arange(d, device=f.device, dtype=torch.float32)
    scale = math.sqrt(2.0 / 3.0) * (d + 1) / torch.sqrt((i + 1) * (i + 2))
    # E[0, :] = 1; row j >= 1: ones from column j on, -j at column j - 1 (rows sum to zero in total)
    e = torch.zeros(d + 1, d, device=f.device, dtype=torch.float32)
    for j in range(d + 1):
        e[j, j:] = 1.0
        if j > 0:
            e[j, j - 1] = -float(j)
    return f @ (e * scale).T


def enclosing_simplex(elevated: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The simplex containing each elevated point ``(B, N, d + 1)``.

    Returns ``rem0`` int64 ``(B, N, d + 1)`` (the remainder-0 vertex: coordinates multiples of
    ``d + 1`` summing to 0) and ``rank`` int64 ``(B, N, d + 1)`` in ``0..d`` (position of each
    coordinate of ``elevated - rem0`` in decreasing order, ties by index).
    """
    d1 = elevated.shape[-1]
    # nearest multiple of d + 1 (an exact half goes down); small integers are exact in float32
    rem0 = torch.ceil(elevated / d1 - 0.5).mul_(d1)
    total = (rem0.sum(-1, keepdim=True) / d1).round_().to(torch.int64)
    diff = elevated - rem0
    # rank = position in decreasing order, ties by index (a stable sort)
    order = torch.sort(diff, dim=-1, descending=True, stable=True).indices
    pos = torch.arange(d1, device=elevated.device).expand_as(order)
    rank = torch.empty_like(order).scatter_(-1, order, pos).add_(total)
    # back onto the plane: ranks outside 0..d wrap around and move their coordinate by d + 1
    shift = (rank < 0).to(torch.int64) - (rank > d1 - 1).to(torch.int64)
    rank.add_(shift * d1)
    rem0 = rem0.to(torch.int64).add_(shift * d1)
    return rem0, rank


def barycentric(elevated: torch.Tensor, rem0: torch.Tensor, rank: torch.Tensor) -> torch.Tensor:
    """Barycentric weights ``(B, N, d + 1)`` (non-negative, sum 1) of each point in its simplex;
    weight ``r`` belongs to the vertex of remainder ``r`` (see :func:`simplex_keys`)."""
    d1 = elevated.shape[-1]
    v = (elevated - rem0.to(elevated.dtype)) / d1
    w = torch.zeros(*elevated.shape[:-1], d1 + 1, device=elevated.device, dtype=elevated.dtype)
    w.scatter_add_(-1, d1 - 1 - rank, v)
    w.scatter_add_(-1, d1 - rank, -v)
    w[..., 0] += 1.0 + w[..., d1]
    return w[..., :d1]


def simplex_keys(rem0: torch.Tensor, rank: torch.Tensor) -> torch.Tensor:
    """Integer coordinates ``(B, N, d + 1, d)`` of the ``d + 1`` simplex vertices (remainder ``r``
    = index 2; the last coordinate is implied, all ``d + 1`` sum to 0)."""
    d1 = rem0.shape[-1]
    return _vertex_keys(rem0[..., :-1], rank[..., :-1], d1)


def _vertex_keys(rem0_d: torch.Tensor, rank_d: torch.Tensor, d1: int) -> torch.Tensor:
    """:func:`simplex_keys` from the first ``d`` coordinates only: ``(..., d)`` -> ``(..., d + 1, d)``."""
    r = torch.arange(d1, device=rem0_d.device, dtype=rem0_d.dtype).view(d1, 1)
    # vertex r: rem0 + r, minus (d + 1) on the coordinates whose rank exceeds d - r (i.e. r >= d + 1 - rank)
    keys = rem0_d.unsqueeze(-2) + r
    keys.sub_((r >= (d1 - rank_d).unsqueeze(-2)).to(keys.dtype) * d1)
    return keys


@dataclass
class Lattice:
    """A built lattice for ``batch`` x ``points`` inputs of dimension ``dim`` (see :func:`build_lattice`).

    ``offsets`` int64 ``(batch * points, dim + 1)``: vertex index of each point's simplex vertices;
    ``weights`` float32 ``(batch * points, dim + 1)``: their barycentric weights (sum 1 per point);
    ``neighbours`` int64 ``(dim + 1, 2, num_vertices)``: the two blur neighbours of each vertex
    along each lattice direction (``num_vertices`` = none);
    ``splat_matrix`` sparse CSR ``(num_vertices, batch * points)`` and ``slice_matrix`` sparse CSR
    ``(batch * points, num_vertices)`` (the weights, times :attr:`alpha` for slicing): splat and
    slice as one sparse matmul each; ``blur_matrices``: ``dim + 1`` sparse CSR
    ``(num_vertices, num_vertices)``, the blur along each direction (1 on the diagonal, 1/2 per
    existing neighbour).
    """

    offsets: torch.Tensor
    weights: torch.Tensor
    neighbours: torch.Tensor
    num_vertices: int
    batch: int
    points: int
    dim: int
    splat_matrix: torch.Tensor
    slice_matrix: torch.Tensor
    blur_matrices: list[torch.Tensor]

    @property
    def alpha(self) -> float:
        """pydensecrf's output scale ``1 / (1 + 2^-d)``."""
        return _alpha(self.dim)


def _alpha(d: int) -> float:
    return 1.0 / (1.0 + 2.0 ** (-d))


def _pack(keys: torch.Tensor, margin: int, batch_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Mixed-radix int64 codes of ``(K, d)`` integer keys with ``batch_index`` ``(K,)`` as the
    leading digit, leaving ``margin`` free on both sides of each coordinate so that a neighbour's
    code is ``code + delta`` without carries; ``None`` when they do not fit in 62 bits."""
    d = keys.shape[-1]
    lo = keys.amin(0) - margin
    span = keys.amax(0) - lo + margin + 1
    n_batch = int(batch_index.max()) + 1
    bits = math.log2(n_batch) + float(torch.log2(span.double()).sum())
    if bits > 62:
        return None
    strides = torch.ones(d, dtype=torch.int64, device=keys.device)
    for k in range(d - 2, -1, -1):
        strides[k] = strides[k + 1] * span[k + 1]
    codes = ((keys - lo) * strides).sum(-1) + batch_index * (strides[0] * span[0])
    return codes, strides


def _unique_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.unique(rows, dim=0, return_inverse=True)`` for int64 ``(K, k)`` rows, through one
    packed int64 code per row when the value ranges allow it (much faster)."""
    lo = rows.amin(0)
    span = rows.amax(0) - lo + 1
    if float(torch.log2(span.double()).sum()) <= 62:
        strides = torch.ones_like(span)
        for k in range(rows.shape[1] - 2, -1, -1):
            strides[k] = strides[k + 1] * span[k + 1]
        codes = ((rows - lo) * strides).sum(-1)
        total = int(strides[0] * span[0])
        uniq, inverse = torch.unique(_narrow(codes, total), sorted=True, return_inverse=True)
        first = torch.empty(uniq.shape, dtype=torch.int64, device=rows.device).scatter_(
            0, inverse, torch.arange(rows.shape[0], device=rows.device))
        return rows[first], inverse
    return torch.unique(rows, dim=0, return_inverse=True)


def _distinct_simplices(el: torch.Tensor, img: torch.Tensor, rem0: torch.Tensor, rank: torch.Tensor,
                        b: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique ``(image, rem0[:d], rank[:d])`` rows of ``(K, d + 1)`` points and each point's row
    index. The rows are packed into one integer code by two float64 matrix-vector products (exact
    below 2^52; bounds from the elevated coordinates, no integer reductions over all points);
    beyond that, :func:`_unique_rows`."""
    d1 = el.shape[1]
    d = d1 - 1
    lo = torch.floor(el[:, :d].amin(0) / d1) - 1  # rem0 / (d + 1) lies within [lo, hi]
    hi = torch.ceil(el[:, :d].amax(0) / d1) + 1
    spans = [b] + [int(x) for x in (hi - lo + 1).tolist()] + [d1] * d
    if sum(math.log2(max(sp, 1)) for sp in spans) > 52:
        return _unique_rows(torch.cat([img[:, None], rem0[:, :d], rank[:, :d]], 1))
    strides = [1.0] * len(spans)
    for k in range(len(spans) - 2, -1, -1):
        strides[k] = strides[k + 1] * spans[k + 1]
    st = torch.tensor(strides, dtype=torch.float64, device=el.device)
    q = torch.div(rem0[:, :d], d1, rounding_mode="floor").double()  # exact integers: the sums below are exact
    codes = (q @ st[1:d1]).add_(rank[:, :d].double() @ st[d1:])
    codes.add_(img.double() * st[0]).sub_(float((lo.double() * st[1:d1]).sum()))
    total = int(strides[0] * spans[0])
    uniq, inverse = torch.unique(_narrow(codes.round_().to(torch.int64), total), sorted=True, return_inverse=True)
    first = torch.empty(uniq.shape, dtype=torch.int64, device=el.device).scatter_(
        0, inverse, torch.arange(el.shape[0], device=el.device))
    return torch.cat([img[first, None], rem0[first, :d], rank[first, :d]], 1), inverse


def _narrow(x: torch.Tensor, bound: int) -> torch.Tensor:
    """int32 copy of non-negative int64 ``x < bound`` when it fits: sorts of int32 are ~2.5x faster
    on CPU (measured: 9 vs 24 ms for 600k keys)."""
    return x.to(torch.int32) if bound < 2**31 - 1 else x


def _make_csr(crow: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Sparse CSR with int32 indices when they fit (MKL's index type: int64 ones were converted,
    i.e. copied, at every product)."""
    if cols.numel() < 2**31 - 1 and max(shape) < 2**31 - 1:
        crow, cols = crow.to(torch.int32), cols.to(torch.int32)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the ops we use are stable
        warnings.simplefilter("ignore")
        return torch.sparse_csr_tensor(crow, cols, values, shape)


def build_lattice(features: torch.Tensor) -> Lattice:
    """Build the lattice of ``(B, N, d)`` float features (finite; in units of the filter's standard
    deviation, e.g. ``(x / sxy, y / sxy, r / srgb, ...)``). Each image gets its own vertices.

    Points that fall in the same simplex share their vertices, so the vertex keys are computed once
    per distinct simplex (one sort of N codes, then one of ``(d + 1) x #simplices`` codes).
    """
    f = _check_features(features)
    b, n, d = f.shape
    d1 = d + 1
    dev = f.device
    el = elevate(f).reshape(b * n, d1)
    rem0, rank = enclosing_simplex(el)
    w = barycentric(el, rem0, rank)
    img = torch.arange(b, device=dev).repeat_interleave(n)
    # distinct simplices: (image, remainder-0 vertex, rank permutation)
    simplices, point_simplex = _distinct_simplices(el, img, rem0, rank, b)
    s_img, s_rem0, s_rank = simplices[:, 0], simplices[:, 1:d1], simplices[:, d1:]
    keys = _vertex_keys(s_rem0, s_rank, d1).reshape(-1, d)  # (S * (d+1), d)
    key_img = s_img.repeat_interleave(d1)
    packed = _pack(keys, d1, key_img)
    if packed is not None:
        codes, strides = packed
        vertices, inverse = torch.unique(_narrow(codes, int(codes.max()) + 1), sorted=True, return_inverse=True)
        vertices = vertices.to(torch.int64)
        m = vertices.numel()
        # neighbours along direction j: every coordinate -1 (resp. +1) except coordinate j, +d
        # (resp. -d); for j = d only the -1 / +1 part (the implied last coordinate takes the +-d)
        base = strides.sum()
        deltas = [(d1 * strides[j] if j < d else 0) - base for j in range(d1)]
        nb = torch.stack([torch.stack([vertices + dj, vertices - dj]) for dj in deltas])  # (d+1, 2, M)
        pos = torch.searchsorted(vertices, nb).clamp_(max=m - 1)
        neighbours = torch.where(vertices[pos] == nb, pos, torch.full_like(pos, m))
    else:  # coordinates too spread for 62-bit codes: rows of (image, key) compared directly (slower)
        rows = torch.cat([key_img[:, None], keys], 1)
        vrows, inverse = torch.unique(rows, dim=0, return_inverse=True)
        m = vrows.shape[0]
        cand = []
        for j in range(d1):
            step = torch.full((d,), -1, dtype=torch.int64, device=dev)
            if j < d:
                step[j] += d1
            step = torch.cat([torch.zeros(1, dtype=torch.int64, device=dev), step])
            cand += [vrows + step, vrows - step]
        _, inv_all = torch.unique(torch.cat([vrows] + cand), dim=0, return_inverse=True)
        lookup = torch.full((int(inv_all.max()) + 1,), m, dtype=torch.int64, device=dev)
        lookup[inv_all[:m]] = torch.arange(m, device=dev)
        neighbours = lookup[inv_all[m:]].view(d1, 2, m)
    offsets = inverse.view(-1, d1)[point_simplex]  # (B*N, d+1)
    flat_off, flat_w = offsets.reshape(-1), w.reshape(-1)
    # splat matrix (M, B*N): the entries sorted by vertex; entry k belongs to point k // (d + 1)
    order = torch.argsort(_narrow(flat_off, m), stable=True)
    crow = torch.zeros(m + 1, dtype=torch.int64, device=dev)
    torch.cumsum(torch.bincount(flat_off, minlength=m), 0, out=crow[1:])
    splat_m = _make_csr(crow, torch.div(order, d1, rounding_mode="floor"), flat_w[order], (m, b * n))
    # rows already in order, d + 1 entries each
    slice_m = _make_csr(torch.arange(0, b * n * d1 + 1, d1, device=dev), flat_off, flat_w * _alpha(d), (b * n, m))
    return Lattice(offsets=offsets, weights=w, neighbours=neighbours.contiguous(), num_vertices=m, batch=b,
                   points=n, dim=d, splat_matrix=splat_m, slice_matrix=slice_m,
                   blur_matrices=[_blur_matrix(neighbours[j], m) for j in range(d1)])


def _blur_matrix(nbrs: torch.Tensor, m: int) -> torch.Tensor:
    """``I + (P_n1 + P_n2) / 2`` as sparse CSR ``(m, m)`` from ``(2, m)`` neighbour indices (``m`` = none)."""
    idx = torch.arange(m, device=nbrs.device)
    cols = torch.sort(torch.stack([idx, nbrs[0], nbrs[1]], 1), 1).values  # (m, 3), missing (= m) last
    keep = cols < m
    crow = torch.zeros(m + 1, dtype=torch.int64, device=nbrs.device)
    torch.cumsum(keep.sum(1), 0, out=crow[1:])
    cols = cols[keep]  # row-major: rows stay in order
    vals = torch.where(cols == idx.repeat_interleave(crow.diff()), 1.0, 0.5)
    return _make_csr(crow, cols, vals.to(torch.float32), (m, m))


def _check_values(lattice: Lattice, values) -> torch.Tensor:
    if not isinstance(values, torch.Tensor):
        raise InvalidInputError(f"values must be a torch tensor (B, N, C), got {type(values).__name__}")
    if values.dim() != 3 or values.shape[0] != lattice.batch or values.shape[1] != lattice.points \
            or values.shape[2] < 1:
        raise InvalidInputError(f"values must be (B, N, C) = ({lattice.batch}, {lattice.points}, C >= 1) for this "
                                f"lattice, got shape {tuple(values.shape)}")
    if not values.is_floating_point():
        raise InvalidInputError(f"values must be float, got dtype {values.dtype}")
    if values.device != lattice.offsets.device:
        raise InvalidInputError(f"values are on {values.device} but the lattice is on {lattice.offsets.device}")
    return values.to(torch.float32)


def _check_vertex_values(lattice: Lattice, vertex_values) -> torch.Tensor:
    m = lattice.num_vertices
    if not isinstance(vertex_values, torch.Tensor) or vertex_values.dim() != 2 or vertex_values.shape[0] != m:
        raise InvalidInputError(f"vertex values must be a ({m}, C) tensor for this lattice, got "
                                f"{tuple(vertex_values.shape) if isinstance(vertex_values, torch.Tensor) else type(vertex_values).__name__}")
    return vertex_values.to(torch.float32)


@contextlib.contextmanager
def _sparse_threads(device: torch.device):
    """CPU sparse matmuls run on one thread: MKL's threaded CSR x dense product spent 10-20 ms per
    call in thread hand-offs on our 2-core machine (any size, 400 to 100k rows), against 0.01-3 ms
    single-threaded. The torch thread count is restored afterwards (not thread-safe with torch work
    in other Python threads)."""
    n = torch.get_num_threads()
    if device.type != "cpu" or n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def splat(lattice: Lattice, values: torch.Tensor) -> torch.Tensor:
    """Spread float ``(B, N, C)`` values onto the vertices (barycentric weights): float32 ``(num_vertices, C)``."""
    v = _check_values(lattice, values)
    with _sparse_threads(v.device):
        return torch.sparse.mm(lattice.splat_matrix, v.reshape(-1, v.shape[-1]))


def blur(lattice: Lattice, vertex_values: torch.Tensor) -> torch.Tensor:
    """Blur ``(num_vertices, C)`` vertex values with ``[1/2, 1, 1/2]`` along lattice directions 0..d
    (a missing neighbour counts as 0): float32 ``(num_vertices, C)``."""
    v = _check_vertex_values(lattice, vertex_values)
    with _sparse_threads(v.device):
        for b in lattice.blur_matrices:  # one sparse (M, M) matrix per direction: I + (P_n1 + P_n2) / 2
            v = torch.sparse.mm(b, v)
    return v


def slice_values(lattice: Lattice, vertex_values: torch.Tensor, add_to: torch.Tensor | None = None) -> torch.Tensor:
    """Interpolate ``(num_vertices, C)`` vertex values back at the points (barycentric weights,
    times :attr:`Lattice.alpha`): float32 ``(B, N, C)``. ``add_to``: a contiguous float32
    ``(B, N, C)`` tensor that the result is added to in place (and returned), without temporaries."""
    v = _check_vertex_values(lattice, vertex_values)
    shape = (lattice.batch, lattice.points, v.shape[1])
    if add_to is None:
        with _sparse_threads(v.device):
            return torch.sparse.mm(lattice.slice_matrix, v).view(shape)
    if tuple(add_to.shape) != shape or add_to.dtype != torch.float32 or not add_to.is_contiguous():
        raise InvalidInputError(f"add_to must be a contiguous float32 {shape} tensor, got "
                                f"{add_to.dtype} {tuple(add_to.shape)}")
    with _sparse_threads(v.device):
        add_to.view(-1, shape[2]).addmm_(lattice.slice_matrix, v)
    return add_to


def rescale(lattice: Lattice, before: torch.Tensor | None = None, after: torch.Tensor | None = None) -> Lattice:
    """A lattice whose filter is ``after * K(before * values)`` (per-point factors, float ``(B, N)``),
    e.g. a normalisation ``D^-1/2 K D^-1/2``; the factors are folded into the splat and slice
    matrices, so filtering costs nothing more. The original is not modified."""
    shape = (lattice.batch, lattice.points)
    out = dataclasses.replace(lattice)
    for name, fac in (("before", before), ("after", after)):
        if fac is None:
            continue
        if not isinstance(fac, torch.Tensor) or tuple(fac.shape) != shape or not fac.is_floating_point():
            raise InvalidInputError(f"{name} must be a float {shape} tensor, got "
                                    f"{tuple(fac.shape) if isinstance(fac, torch.Tensor) else type(fac).__name__}")
        fac = fac.reshape(-1).to(torch.float32)
        if name == "before":  # scales the splat matrix's columns
            m = out.splat_matrix
            out.splat_matrix = _make_csr(m.crow_indices(), m.col_indices(), m.values() * fac[m.col_indices()],
                                         tuple(m.shape))
        else:  # scales the slice matrix's rows (d + 1 entries per row)
            m = out.slice_matrix
            vals = (m.values().view(-1, lattice.dim + 1) * fac[:, None]).reshape(-1)
            out.slice_matrix = _make_csr(m.crow_indices(), m.col_indices(), vals, tuple(m.shape))
    return out


def lattice_filter(lattice: Lattice, values: torch.Tensor) -> torch.Tensor:
    """Approximate ``out_i = sum_j exp(-|f_i - f_j|^2 / 2) v_j`` within each image, the self term
    included: float ``(B, N, C)`` values -> float32 ``(B, N, C)``."""
    return slice_values(lattice, blur(lattice, splat(lattice, values)))


def gaussian_filter(features: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """:func:`build_lattice` + :func:`lattice_filter` in one call (build once when filtering often)."""
    return lattice_filter(build_lattice(features), values)
