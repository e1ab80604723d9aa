"""jointattn: finds the joint (image + text) attention of diffusion transformers and runs it as one op.

    import jointattn
    out, joint_out, lse = jointattn.joint_attention(q, k, v, joint_q, joint_k, joint_v, logical_l=77)
    compiled = torch.compile(model, backend="jointattn")
    print(jointattn.explain(model, *inputs))

Data path: model -> capture (Dynamo) -> `passes.fx` (fusion) -> `runtime.ops` (the ops) -> a runtime
(`runtime.registry`) -> `kernels` (Triton) or ttnn.
"""

from .runtime import joint_attention

__version__ = "0.1.0"


def __getattr__(name):
    # Imported on first use: the compiler pulls in Dynamo, which plain op users do not need.
    if name == "explain":
        from .compiler.explain import explain

        return explain
    if name == "export":
        from .compiler.export import export

        return export
    if name == "fuse_joint_attention":
        from .passes.fx import fuse_joint_attention

        return fuse_joint_attention
    raise AttributeError(f"module 'jointattn' has no attribute {name!r}")


__all__ = ["joint_attention", "explain", "export", "fuse_joint_attention", "__version__"]
