"""Training compute in floating-point operations, from the model's shape and the tokens it sees.

Counted: the matrix products (2 FLOPs per multiply-add), which are nearly all the work: 2 x (matrix parameters)
per position the model computes, plus attention's two products, query.key and weights.value, over the full
(queries x tokens) score matrix as the kernels compute it at these lengths (PaLM's convention), plus the
momentum term's product with its decay matrix. Not counted: LayerNorms, softmax, GELU, additions. Only positions
the model computes count: the ICL transformer's last block and read-out run at the x positions alone
(models/transformer.py, `x_only`). Each architecture counts its own forward pass (`ICLModel.forward_flops`: the
transformer analytically, the others by torch's FlopCounterMode on a real pass, which counts the same products). A
training step costs 3 forward passes (the backward pass about 2), the usual 6 N per token.
"""

from __future__ import annotations

STEP_PASSES = 3  # forward + backward, in forward passes


def step_flops(forward: int, batch: int) -> int:
    """A training step on `batch` sequences whose forward pass costs `forward` FLOPs each."""
    return STEP_PASSES * forward * batch
