"""The "sdpa" runtime: joint attention as the unfused graph computes it, cat -> PyTorch's SDPA -> slice.

The dispatcher (`dispatch.py`) takes this path wherever a PyTorch attention kernel measured faster than ours
(small calls, where a few large library launches beat ours; head sizes our kernels are not tuned for; the
backward, where cuDNN's is faster than our Triton one). It keeps the op's contract: out, joint_out, lse (float32,
natural log) and gradients through out and joint_out.

Joins (q, k, v in the forward; q, k, v, out and dO in the backward) go in one launch at large sizes and through
torch.cat at small ones (`join.py`). Forward: the three joins, one SDPA kernel that also returns the log-sum-exp (on CUDA the one PyTorch's own
choice would run for those tensors, `torch._fused_sdp_choice`: cuDNN, flash or memory-efficient; the flash
kernel on CPU), its output copied into the op's outputs (the slices of the unfused graph).
Backward: an SDPA backward on the concatenated tensors with the op's lse. It needs only what every runtime's
forward leaves behind (out, joint_out and the natural-log lse), so it can follow any forward. cuDNN's backward
gets its q, k and v in `join.py`'s private layout (`_cudnn_backward`: torch 2.11's graph cache). A kernel that
refuses a call (a size or layout it does not take) is skipped for the next, which computes the same function.

Padded calls (valid lengths) run as "unpad -> SDPA -> pad" does: every query row against the valid keys alone,
cut out of both token sets (no mask), one SDPA per run of batch entries with equal lengths (one for the uniform
lengths of a prompt batch). That needs the lengths on the host: read once per lengths tensor and version
(`validation.host_lengths`; a model passes one tensor to every layer and the backward), so not while a CUDA
graph is captured. A batch entry with no valid key gets what the op promises (0, lse -inf, zero gradients).

Limits (`unsupported`, which the dispatcher asks): no gradient through lse in the backward, a backend for the
device and dtype, and no padded call while a CUDA graph is captured.
"""

from __future__ import annotations

import torch

from . import join
from .call import JointCall
from .validation import host_lengths

aten = torch.ops.aten


# PyTorch's SDPBackend values, as `torch._fused_sdp_choice` returns them.
_CHOICE = {1: "flash", 2: "efficient", 3: "cudnn"}
_GPU_ORDER = ("cudnn", "flash", "efficient")
# PyTorch's choice -> the kernels to try, its choice first (a choice without a fused kernel: ours, in order).
_ORDERS = {value: (first, *(b for b in _GPU_ORDER if b != first)) for value, first in _CHOICE.items()}
_CHOICE_OF = {name: value for value, name in _CHOICE.items()}
_BROKEN: set = set()  # (backend, pass, dtype, dh) that raised here: skipped from then on


def backend_for(device: torch.device, dtype: torch.dtype) -> str | None:
    """Whether this path has an SDPA kernel with a log-sum-exp for `dtype` on `device`: "gpu" (cuDNN, flash
    or memory-efficient, chosen per call as PyTorch would), "cpu_flash", or None."""
    if device.type == "cpu":
        # Not float64: the backward would read the op's float32 lse and lose float64's precision.
        return "cpu_flash" if dtype in (torch.float32, torch.bfloat16, torch.float16) else None
    if device.type == "cuda" and dtype in (torch.float16, torch.bfloat16):
        return "gpu"
    return None


def unsupported(call, *, backward: bool = False, grad_lse=None) -> str | None:
    """Why this path cannot run `call` (its forward, or with `backward` its backward), or None: asked of the
    dispatcher, which states every path's limits."""
    from .dispatch import describe
    from .dispatch import unsupported as path_unsupported

    return path_unsupported("sdpa", describe(call, backward=backward, grad_lse=grad_lse))


def _joined_valid_keys(call, n_valid: int, l_valid: int, *more, private=frozenset()) -> list:
    """q of every row; k and v of the valid keys of both sets (unpad; a whole set is taken as it is); then each
    further (spatial, joint) pair of `more` whole. One launch for all (`join.join_pairs`; `private`: the indices
    joined in the private layout)."""
    n, l = call.q.shape[2], call.joint_q.shape[2]  # noqa: E741
    return join.join_pairs(
        [
            (call.q, call.joint_q, n, l),
            (call.k, call.joint_k, n_valid, l_valid),
            (call.v, call.joint_v, n_valid, l_valid),
            *((a, c, n, l) for a, c in more),
        ],
        private,
    )


def length_runs(b: int, n: int, l: int, logical_n, logical_l) -> list[tuple[slice, int, int]]:  # noqa: E741
    """(batch rows, valid N, valid L) for each run of batch entries with the same valid lengths; lengths are
    None (all valid), an int or a [b] tensor (read on the host once per version, `host_lengths`). Values are
    not range-checked here (the op's checks are)."""

    def per_entry(length, full):
        if length is None or type(length) is int:
            return (full if length is None else length,) * b
        return host_lengths(length)

    ns, ls = per_entry(logical_n, n), per_entry(logical_l, l)
    runs, start = [], 0
    for i in range(1, b + 1):
        if i == b or (ns[i], ls[i]) != (ns[start], ls[start]):
            runs.append((slice(start, i), ns[start], ls[start]))
            start = i
    return runs


def _length_runs(call) -> list[tuple[slice | None, int, int]]:
    """`length_runs` of a call; rows None: the whole batch, unpadded (no host read, no views)."""
    if call.logical_n is None and call.logical_l is None:
        return [(None, call.q.shape[2], call.joint_q.shape[2])]
    s = call.shape
    return length_runs(s.b, s.n, s.l, call.logical_n, call.logical_l)


def _at(x, rows: slice | None):
    """x (a tensor or a JointCall) at batch entries `rows` (None: all of them, as it is)."""
    if rows is None:
        return x
    return x.rows(rows) if isinstance(x, JointCall) else x[rows]


def switches() -> tuple:
    """The global settings PyTorch's kernel choice reads (`sdpa_kernel`'s backends and priority, FA3,
    deterministic algorithms, strict or warn-only): with the tensors' sizes, strides, dtype and device (and the
    current GPU's properties), what `kernel_order` depends on. ~0.2 µs, against 12-15 µs for the choice itself
    on an H200 host."""
    c = torch._C
    return (
        c._get_cudnn_sdp_enabled(), c._get_flash_sdp_enabled(), c._get_mem_efficient_sdp_enabled(),
        c._get_math_sdp_enabled(), c._get_fa3_sdp_enabled(), tuple(c._get_sdp_priority_order()),
        c._get_deterministic_algorithms(), c._get_deterministic_algorithms_warn_only(),
    )  # fmt: skip


_ENABLED = {
    "cudnn": torch.backends.cuda.cudnn_sdp_enabled,
    "flash": torch.backends.cuda.flash_sdp_enabled,
    "efficient": torch.backends.cuda.mem_efficient_sdp_enabled,
}


def kernel_order(q, k, v, scale: float) -> tuple[str, ...] | None:
    """The GPU kernels `attention_on` tries for these tensors, PyTorch's own choice first, without those the
    caller's `sdpa_kernel` (or `torch.backends.cuda`) turned off; all of them where that leaves none (the op
    returns lse, which PyTorch's math kernel does not). None on CPU."""
    if q.device.type == "cpu":
        return None
    return _gpu_backends(q, k, v, scale, "forward")


def _enabled(order: tuple[str, ...]) -> tuple[str, ...]:
    """`order` without the kernels the caller's `sdpa_kernel` (or `torch.backends.cuda`) turned off; all of
    them where that leaves none (the op returns lse, which PyTorch's math kernel does not)."""
    return tuple(b for b in order if _ENABLED[b]()) or order


def _gpu_backends(q, k, v, scale: float, pass_: str) -> tuple[str, ...]:
    """PyTorch's own choice for these tensors first (what cat -> SDPA -> slice runs), then the others it
    allows."""
    order = _enabled(
        _ORDERS.get(int(torch._fused_sdp_choice(q, k, v, None, 0.0, False, scale=scale)), _GPU_ORDER)
    )
    if not _BROKEN:  # the common case, on the host's hot path
        return order
    return tuple(b for b in order if _key(b, pass_, q) not in _BROKEN)


def _backward_order(first: str | None, q, k, v, scale: float) -> tuple[str, ...]:
    """The kernels a backward tries, in order: `first` (the forward's) and then the others the caller allows,
    without asking PyTorch's choice again; or, without `first` or once a kernel has refused something,
    `_gpu_backends`."""
    if first in _CHOICE_OF and not _BROKEN:
        return _enabled(_ORDERS[_CHOICE_OF[first]])
    return _gpu_backends(q, k, v, scale, "backward")


def _key(backend: str, pass_: str, q) -> tuple:
    return (backend, pass_, q.dtype, q.shape[-1])


def _refused(backend: str, pass_: str, q, error: RuntimeError) -> None:
    """A kernel that refused these tensors (a size or layout it does not take) is skipped for them from now on;
    running out of memory is not a refusal."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        raise error
    _BROKEN.add(_key(backend, pass_, q))


def attention(q, k, v, scale: float, order: tuple[str, ...] | None = None):
    """(out [b, nh, S, dh], lse [b, nh, S] float32, natural log). The kernels through their `torch.*` bindings:
    ~1 µs less host time a call than through `torch.ops.aten` (the eager shortcut's small calls are host time)."""
    return attention_on(q, k, v, scale, order)[:2]


def attention_on(q, k, v, scale: float, order: tuple[str, ...] | None = None):
    """`attention`'s (out, lse), and the kernel that ran ("cudnn", "flash", "efficient"; "cpu_flash"), which a
    backward of the same tensors can take again (`attention_backward(..., first=)`) instead of asking PyTorch's
    choice a second time (~12-15 µs of an H200 host's time). `order`: the kernels to try, as `kernel_order`
    gave them for tensors like these under the same `switches()` (a caller that repeats its shapes keeps it)."""
    if q.device.type == "cpu":
        return (*flash_attention(q, k, v, scale), "cpu_flash")
    s = q.shape[2]
    if order is None:
        order = _gpu_backends(q, k, v, scale, "forward")
    elif _BROKEN:  # a kernel that refused such tensors is not tried again
        order = tuple(b for b in order if _key(b, "forward", q) not in _BROKEN)
    for backend in order:
        try:
            if backend == "cudnn":
                out, lse = torch._scaled_dot_product_cudnn_attention(
                    q, k, v, None, True, 0.0, False, False, scale=scale
                )[:2]
            elif backend == "flash":
                out, lse = flash_attention(q, k, v, scale)
            else:
                out, lse = torch._scaled_dot_product_efficient_attention(
                    q, k, v, None, True, 0.0, False, scale=scale
                )[:2]
            if lse.dim() != 3:  # cuDNN's [b, nh, S, 1]
                lse = lse.reshape(*lse.shape[:2], -1)
            return out, lse if lse.shape[2] == s else lse[:, :, :s], backend  # efficient: lse rows in 32s
        except RuntimeError as error:  # a refusal: the next kernel computes the same function
            _refused(backend, "forward", q, error)
    raise RuntimeError("joint_attention: no PyTorch SDPA kernel took this call")


def flash_attention(q, k, v, scale: float):
    """(out, lse) of PyTorch's flash kernel for the device (its CPU one on CPU tensors), as autograd records it."""
    if q.device.type == "cpu":
        return torch._scaled_dot_product_flash_attention_for_cpu(q, k, v, scale=scale)
    return torch._scaled_dot_product_flash_attention(q, k, v, 0.0, False, False, scale=scale)[:2]


def attention_backward(grad, q, k, v, out, lse, scale: float, first: str | None = None):
    """(dq, dk, dv) of SDPA on the joined tensors, from its output and the op's natural-log lse. `first`: the
    kernel to try first (the one the forward of these tensors ran, `attention_on`), else PyTorch's choice."""
    if q.device.type == "cpu":
        return aten._scaled_dot_product_flash_attention_for_cpu_backward(
            grad, q, k, v, out, lse, 0.0, False, scale=scale
        )
    b, nh, s, _ = q.shape
    s_k = k.shape[2]
    for backend in _backward_order(first, q, k, v, scale):
        try:
            if backend == "cudnn":
                return _cudnn_backward(grad, q, k, v, out, lse.reshape(b, nh, s, 1), s_k, scale)
            if backend == "flash":
                return aten._scaled_dot_product_flash_attention_backward(
                    grad, q, k, v, out, lse, None, None, s, s_k, 0.0, False, None, None, scale=scale
                )
            padded = lse.new_zeros(b, nh, -(-s // 32) * 32)  # the efficient kernel's lse rows come in 32s
            padded[:, :, :s] = lse
            return aten._scaled_dot_product_efficient_attention_backward(
                grad,
                q,
                k,
                v,
                None,
                out,
                padded,
                None,
                None,
                0.0,
                [True, True, True, False],
                False,
                scale=scale,
            )[:3]
        except RuntimeError as error:
            _refused(backend, "backward", q, error)
    raise RuntimeError("joint_attention: no PyTorch SDPA backward took this call")


def _cudnn_backward(grad, q, k, v, out, stats, s_k: int, scale: float):
    """cuDNN's SDPA backward on operands laid out as every call of ours lays them out: q, k and v private
    (`join.to_private`), O, dO and the stats packed (`_packed`). Why: torch 2.11 caches the backward graph by q, k
    and v's sizes and strides and bakes the first call's O and dO strides into it; a call with the same key and
    another dO layout runs the first call's graph and gets wrong gradients, no error. The private key keeps our
    graphs apart from the models' own, and one layout for the rest keeps our calls consistent among themselves.
    The joins already produce these layouts; anything else is copied into them here."""
    q, k, v = join.to_private(q), join.to_private(k), join.to_private(v)
    grad, out, stats = _packed(grad), _packed(out), _packed(stats)
    s = q.shape[2]
    return aten._scaled_dot_product_cudnn_attention_backward(
        grad, q, k, v, out, stats, None, None, None, None, None, s, s_k, 0.0, False, scale=scale
    )


def _packed(t):
    """t itself where its strides are exactly the packed ones (size-1 dims too), else a packed copy."""
    packed, size = [], 1
    for extent in reversed(t.shape):
        packed.append(size)
        size *= extent
    return t if t.stride() == tuple(reversed(packed)) else t.new_empty(t.shape).copy_(t)


class SdpaRuntime:
    name = "sdpa"

    def unsupported(self, call) -> str | None:
        return unsupported(call)

    def forward(self, call, out, joint_out, lse) -> None:
        n = call.q.shape[2]
        for rows, n_valid, l_valid in _length_runs(call):
            if n_valid + l_valid == 0:  # rows that see no key: 0 and lse -inf, as the op promises
                out[rows].zero_()
                joint_out[rows].zero_()
                lse[rows].fill_(float("-inf"))
                continue
            o, m = attention(*_joined_valid_keys(_at(call, rows), n_valid, l_valid), call.scale)
            _at(out, rows).copy_(o[:, :, :n])
            _at(joint_out, rows).copy_(o[:, :, n:])
            _at(lse, rows).copy_(m)

    def backward(self, call, out, joint_out, lse, grad_out, grad_joint_out, grad_lse):
        reason = unsupported(call, backward=True, grad_lse=grad_lse)
        if reason is not None:
            raise ValueError(f"joint_attention: the sdpa path cannot run this backward: {reason}")
        n, l = call.q.shape[2], call.joint_q.shape[2]  # noqa: E741
        runs = _length_runs(call)
        if len(runs) == 1 and runs[0][1] + runs[0][2] > 0:  # one SDPA for the batch: slices of its gradients
            _, n_valid, l_valid = runs[0]
            dq, dk, dv = _valid_key_backward(call, out, joint_out, lse, grad_out, grad_joint_out, *runs[0])
            keys = [
                (_zero_padded(d[:, :, :n_valid], n), _zero_padded(d[:, :, n_valid:], l)) for d in (dk, dv)
            ]
            return dq[:, :, :n], keys[0][0], keys[1][0], dq[:, :, n:], keys[0][1], keys[1][1]
        grads = [torch.zeros_like(t) for t in call.tensors]  # padded keys get none, nor rows without keys
        for rows, n_valid, l_valid in runs:
            if n_valid + l_valid == 0:
                continue
            dq, dk, dv = _valid_key_backward(
                call, out, joint_out, lse, grad_out, grad_joint_out, rows, n_valid, l_valid
            )
            grads[0][rows] = dq[:, :, :n]
            grads[3][rows] = dq[:, :, n:]
            for g, joint_g, d in ((grads[1], grads[4], dk), (grads[2], grads[5], dv)):
                g[rows, :, :n_valid] = d[:, :, :n_valid]
                joint_g[rows, :, :l_valid] = d[:, :, n_valid:]
        return tuple(grads)


def _valid_key_backward(call, out, joint_out, lse, grad_out, grad_joint_out, rows, n_valid, l_valid):
    """(dq of every row, dk and dv of the valid keys) of the batch entries `rows`, which share these lengths."""
    q, k, v, o, d_o = _joined_valid_keys(
        _at(call, rows),
        n_valid,
        l_valid,
        (_at(out, rows), _at(joint_out, rows)),
        (_at(grad_out, rows), _at(grad_joint_out, rows)),
        private=frozenset({0, 1, 2}),  # q, k, v: cuDNN's backward graph keyed apart (`_cudnn_backward`)
    )
    return attention_backward(d_o, q, k, v, o, _at(lse, rows), call.scale)


def _zero_padded(g, size: int):
    """g [b, nh, valid, dh] as the gradient of a set of `size` tokens: itself when whole, else zeros past it."""
    return g if g.shape[2] == size else torch.nn.functional.pad(g, (0, 0, 0, size - g.shape[2]))
