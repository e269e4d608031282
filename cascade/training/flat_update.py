"""The optimizer update on one flat vector instead of per parameter tensor.

A network's parameters are a pytree of ~100-300 small tensors. AdamW, gradient clipping, the
EMA and the refusal of non-finite updates are elementwise, so applied per tensor they put ~16
small fused kernels per tensor into the step's program: with the tiny test models most of
what XLA compiles (keyframes `tiny`: 157 tensors, 2504 fusions; the step compiled in ~7 s
against ~2 s for the loss and its gradient). Concatenated into one vector per tree, the same
update is a handful of kernels (the same arithmetic per element; the gradient norm sums in
another order, so results agree to float rounding, not bit for bit).

Only for parameters that every device holds whole: concatenating sharded (FSDP) tensors
would gather them, so those keep the per-tensor update. Checkpoints are unchanged: the
state stays a pytree of tensors; only the step's arithmetic runs on the flat vectors.

Only for small networks, too: the ravel and unravel copy the parameters, gradients, EMA and
both moments every step (~9 passes over P floats), a cost that is lost in the step below a
million or two parameters but not above (measured on a 2-core Zen 5, the same minute, flat
against per-tensor: the quick U-Nets (0.82-0.85M) 0.120-0.126 against 0.123-0.125 s and
0.234-0.249 against 0.229 s; the quick DiT (3.06M) 0.449 against 0.434 s; the bench models
(8.5-19.3M): VAE 1.22 against 1.05 s, U-Net 2.12 against 1.92 s, DiT 0.40-0.47 against
0.33 s). Compile time, what the flat update saves, matters for the tests' and the
quickstart's small networks; run time for the large ones.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

# Above this many parameters the per-tensor update runs faster (module docstring).
MAX_FLAT_PARAMS = 2_000_000


class FlatParams:
    """Ravel trees shaped like `params` into one vector [P], and back.

    Args:
      params: the parameter pytree (its structure, shapes and dtype define the layout).
    """

    def __init__(self, params: Any):
        self.treedef = jax.tree.structure(params)
        _, self._unravel = ravel_pytree(params)

    @staticmethod
    def applies(params: Any, param_shardings: Any = None) -> bool:
        """Whether the flat update suits `params`: one floating dtype, at most
        MAX_FLAT_PARAMS parameters, and every tensor replicated (or no shardings given)."""
        leaves = jax.tree.leaves(params)
        dtypes = {jnp.dtype(leaf.dtype) for leaf in leaves}
        if len(dtypes) != 1 or not jnp.issubdtype(dtypes.pop(), jnp.floating):
            return False
        if sum(int(np.prod(leaf.shape)) for leaf in leaves) > MAX_FLAT_PARAMS:
            return False
        shardings = jax.tree.leaves(param_shardings) if param_shardings is not None else []
        return all(s.is_fully_replicated for s in shardings)

    def _is_params_like(self, node: Any) -> bool:
        return jax.tree.structure(node) == self.treedef

    def ravel(self, tree: Any) -> Any:
        """`tree` with every subtree shaped like the params (the params themselves, their
        gradients, EMA, the optimizer's moments) replaced by its vector [P]."""
        return jax.tree.map(
            lambda node: ravel_pytree(node)[0] if self._is_params_like(node) else node,
            tree,
            is_leaf=self._is_params_like,
        )

    def unravel(self, flat: Any, template: Any) -> Any:
        """Inverse of `ravel`: `template` (the tree before `ravel`) says which vectors of
        `flat` become params-shaped subtrees again."""
        return jax.tree.map(
            lambda node, value: self._unravel(value) if self._is_params_like(node) else value,
            template,
            flat,
            is_leaf=self._is_params_like,
        )
