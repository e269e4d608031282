"""The optimizer update on one flat vector: the layout round-trips, and it is used only where
every parameter is whole on every device (the flat and per-tensor steps are compared on the
keyframe stage in test_train.py::test_sharded_step_matches_single_device)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cascade.training import flat_update
from cascade.training.flat_update import FlatParams


def _params():
    return {"conv": {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)}, "scale": jnp.zeros(())}


def test_ravel_replaces_params_shaped_subtrees_and_unravel_restores_them():
    params = _params()
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))
    state = {"step": jnp.int32(3), "params": params, "opt_state": tx.init(params)}
    flat = FlatParams(params)
    raveled = flat.ravel(state)
    adam = raveled["opt_state"][1][0]
    assert raveled["params"].shape == adam.mu.shape == adam.nu.shape == (10,)
    assert raveled["step"].shape == () and adam.count.shape == ()
    back = flat.unravel(raveled, state)
    assert jax.tree.structure(back) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_flat_adamw_step_is_the_per_tensor_step():
    params, grads = _params(), jax.tree.map(lambda x: jnp.cos(x + 1.0), _params())
    tx = optax.chain(optax.clip_by_global_norm(0.5), optax.adamw(1e-2, weight_decay=0.1))
    flat = FlatParams(params)
    opt = tx.init(params)
    updates, _ = tx.update(grads, opt, params)
    flat_updates, _ = tx.update(flat.ravel(grads), flat.ravel(opt), flat.ravel(params))
    per_tensor = jax.tree.leaves(flat.unravel(flat_updates, grads))
    for a, b in zip(jax.tree.leaves(updates), per_tensor, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-9)


def test_applies_only_to_one_float_dtype_with_every_tensor_replicated():
    params = _params()
    assert FlatParams.applies(params)
    assert not FlatParams.applies(dict(params, scale=jnp.zeros((), jnp.bfloat16)))
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:2]), ("fsdp",))
    whole = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("fsdp"))
    shardings = jax.tree.map(lambda _: whole, params)
    assert FlatParams.applies(params, shardings)
    shardings["conv"]["b"] = split
    assert not FlatParams.applies(params, shardings)
    # Large networks keep the per-tensor update (the copies would cost more than they save).
    big = dict(params, big=jax.ShapeDtypeStruct((flat_update.MAX_FLAT_PARAMS,), jnp.float32))
    assert not FlatParams.applies(big)
