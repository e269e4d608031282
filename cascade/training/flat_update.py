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
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree


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
        """Whether the flat update suits `params`: one floating dtype, and every tensor
        replicated (or no shardings given)."""
        dtypes = {jnp.dtype(leaf.dtype) for leaf in jax.tree.leaves(params)}
        if len(dtypes) != 1 or not jnp.issubdtype(dtypes.pop(), jnp.floating):
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
