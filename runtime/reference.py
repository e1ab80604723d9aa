"""The exact reference: joint attention in plain torch, on any device, forward and backward.

It is the function every other runtime is checked against and the path taken when nothing faster supports
the inputs. It follows the unfused graph literally (cat on the sequence dim, attention over the keys that
exist, slice apart) but computes in float32 (float64 for float64 inputs) and returns the log-sum-exp.
Scores are formed a block of query rows at a time so that memory stays bounded at any sequence length.

Padding arrives as an additive per-key bias `[b, N+L]` (0 for a key that exists, -inf for one that does not):
the op builds it from valid lengths, and the masked-op fallback from an arbitrary key mask, so one exact
path serves both.
"""

from __future__ import annotations

import torch

_SCORE_BUDGET = 1 << 25  # score elements per query block (128 MiB in float32)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def key_bias_from_lengths(logical_n, logical_l, b: int, n: int, l: int, device) -> torch.Tensor | None:  # noqa: E741
    """Per-key additive bias [b, N+L] (0 valid, -inf padded) for per-batch valid lengths; None if all valid."""
    if logical_n is None and logical_l is None:
        return None
    valid = torch.cat([_prefix_valid(logical_n, b, n, device), _prefix_valid(logical_l, b, l, device)], dim=1)
    zero = torch.zeros((), dtype=torch.float32, device=device)
    return torch.where(valid, zero, torch.full_like(zero, float("-inf")))


def _prefix_valid(length, b: int, size: int, device) -> torch.Tensor:
    if length is None:
        return torch.ones(b, size, dtype=torch.bool, device=device)
    return torch.arange(size, device=device)[None, :] < length.reshape(b, 1)


def _joined(q, k, v, joint_q, joint_k, joint_v, key_bias):
    """q, k, v of the whole sequence in the accumulation dtype; keys and values of absent keys zeroed, so that whatever
    their storage holds (padding allocated with torch.empty, NaN) never reaches the result."""
    acc = accumulation_dtype(q.dtype)
    qq, kk, vv = (torch.cat([a, b], dim=2).to(acc) for a, b in ((q, joint_q), (k, joint_k), (v, joint_v)))
    if key_bias is not None:
        absent = torch.isneginf(key_bias)[:, None, :, None]
        zero = torch.zeros((), dtype=acc, device=vv.device)
        kk, vv = torch.where(absent, zero, kk), torch.where(absent, zero, vv)
    return qq, kk, vv


def _row_block(b: int, nh: int, s: int) -> int:
    return max(1, _SCORE_BUDGET // max(1, b * nh * s))


def _scores(qb, kk, scale, key_bias):
    """Scaled scores plus the per-key bias; an absent key's score is -inf whatever q·k gave (NaN included)."""
    s = torch.matmul(qb, kk.transpose(-1, -2)) * scale
    if key_bias is not None:
        bias = key_bias[:, None, None, :].to(s.dtype)
        s = torch.where(torch.isneginf(bias), bias, s + bias)
    return s


def _softmax(s):
    """(probabilities, lse) by max-shift: exact also where the scores are huge and equal (finfo.min biases),
    where exp(s - logsumexp(s)) would lose log(S) to rounding. Rows that see no key (every score -inf): zeros
    and -inf. A NaN score, or +inf, makes its row NaN, as SDPA's softmax does."""
    m = s.amax(-1, keepdim=True)
    empty = torch.isneginf(m)
    e = torch.exp(s - torch.where(empty, torch.zeros_like(m), m))
    total = e.sum(-1, keepdim=True)
    p = torch.where(empty, torch.zeros_like(e), e / torch.where(empty, torch.ones_like(total), total))
    lse = torch.where(empty, torch.full_like(total, float("-inf")), m + torch.log(total))
    return p, lse.squeeze(-1)


def reference_forward(q, k, v, joint_q, joint_k, joint_v, scale: float, key_bias=None):
    """Returns (out [b,nh,N,dh], joint_out [b,nh,L,dh], lse [b,nh,N+L]) in the accumulation dtype."""
    qq, kk, vv = _joined(q, k, v, joint_q, joint_k, joint_v, key_bias)
    b, nh, s_total, dh = qq.shape
    out = torch.empty_like(qq)
    lse = torch.empty(qq.shape[:3], dtype=qq.dtype, device=qq.device)
    step = _row_block(b, nh, s_total)
    for start in range(0, s_total, step):
        rows = slice(start, start + step)
        p, lse[:, :, rows] = _softmax(_scores(qq[:, :, rows], kk, scale, key_bias))
        out[:, :, rows] = torch.matmul(p, vv)
    n = q.shape[2]
    return out[:, :, :n], out[:, :, n:], lse


def reference_backward(
    grad_out, grad_joint_out, grad_lse, q, k, v, joint_q, joint_k, joint_v, scale, key_bias=None
):
    """Exact gradients of (out, joint_out, lse) w.r.t. the six inputs, recomputing the forward.

    dS = P * (dP - D + dlse), D = rowsum(dO * O): the lse output is differentiable, which is what lets
    partial results be merged by log-sum-exp (ring attention) and still be trained through.
    """
    qq, kk, vv = _joined(q, k, v, joint_q, joint_k, joint_v, key_bias)
    acc = qq.dtype
    b, nh, s_total, dh = qq.shape
    d_o = torch.cat([grad_out, grad_joint_out], dim=2).to(acc)
    d_lse = grad_lse.to(acc) if grad_lse is not None else None
    dq = torch.empty_like(qq)
    dk = torch.zeros_like(kk)
    dv = torch.zeros_like(vv)
    step = _row_block(b, nh, s_total)
    for start in range(0, s_total, step):
        rows = slice(start, start + step)
        p, _ = _softmax(_scores(qq[:, :, rows], kk, scale, key_bias))
        o = torch.matmul(p, vv)
        d_p = torch.matmul(d_o[:, :, rows], vv.transpose(-1, -2))
        delta = (d_o[:, :, rows] * o).sum(-1)
        if d_lse is not None:
            delta = delta - d_lse[:, :, rows]
        d_s = p * (d_p - delta[..., None])
        dq[:, :, rows] = torch.matmul(d_s, kk) * scale
        dk += torch.matmul(d_s.transpose(-1, -2), qq[:, :, rows]) * scale
        dv += torch.matmul(p.transpose(-1, -2), d_o[:, :, rows])
    n = q.shape[2]
    return dq[:, :, :n], dk[:, :, :n], dv[:, :, :n], dq[:, :, n:], dk[:, :, n:], dv[:, :, n:]


def reference_vjp(tensors, scale: float, key_bias, cotangents, needs) -> tuple:
    """Gradients of the six inputs along `cotangents` (of out, joint_out, lse; None for an unused output),
    taken by autograd through `reference_forward` with create_graph: themselves differentiable, which is what
    a double backward needs. `needs` says which of the six to return (the others are None)."""
    if not any(needs):
        return (None,) * len(tensors)
    with torch.enable_grad():
        outputs = reference_forward(*tensors, scale, key_bias)
        used = [(o, g.to(o.dtype)) for o, g in zip(outputs, cotangents) if g is not None]
        wanted = [t for t, need in zip(tensors, needs) if need]
        found = torch.autograd.grad(
            [o for o, _ in used], wanted, [g for _, g in used], create_graph=True, allow_unused=True
        )
    found = iter(found)
    grads = []
    for t, need in zip(tensors, needs):
        g = next(found) if need else None
        if need and g is None:  # an input no output depends on (an empty token set)
            g = torch.zeros_like(t)
        grads.append(g.to(t.dtype) if g is not None else None)
    return tuple(grads)
