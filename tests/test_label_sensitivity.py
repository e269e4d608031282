"""Label-use diagnostics: the label effect is zero when the label cannot matter, the diffusion
classifier is exact for a network that knows each class and shows a permuted label."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config
from flax import nnx

from cascade.evaluation import label_sensitivity
from cascade.stages import build_stage
from cascade.stages.latent_dit import LatentDiTStage


@pytest.fixture(scope="module")
def keyframes(data_dir):
    """The tiny keyframe stage and a random-weight U-Net (zero-initialised layers get noise
    too, so that the label reaches the output), and clean clips [4, 4, 8, 8, 1]."""
    stage = build_stage(tiny_config("keyframes", data_dir))
    model = stage.build_model(nnx.Rngs(0))
    rng = np.random.default_rng(0)
    graphdef, params = nnx.split(model)
    params = jax.tree.map(lambda x: x + 0.1 * rng.standard_normal(x.shape, np.float32), params)
    clips = rng.uniform(-1, 1, (4, *stage.output_shape)).astype(np.float32)
    return stage, nnx.merge(graphdef, params), clips


def test_label_effect_is_zero_only_when_every_label_embeds_alike(keyframes):
    stage, model, clips = keyframes
    effect = label_sensitivity.label_effect(stage, model, clips, levels=(0.3, 0.7))
    assert set(effect) == {0.3, 0.7}
    assert all(e > 1e-3 for e in effect.values()), effect
    same = nnx.clone(model)
    table = same.label_emb.value
    same.label_emb.value = jnp.broadcast_to(table[:1], table.shape)  # every label, null too
    blind = label_sensitivity.label_effect(stage, same, clips, levels=(0.3, 0.7))
    assert all(e == 0.0 for e in blind.values()), blind


def test_noised_inputs_follow_each_familys_time_axis(keyframes, data_dir):
    stage, _, clips = keyframes
    x = jnp.asarray(clips)
    eps = jax.random.normal(jax.random.key(1), x.shape)
    z, logsnr = label_sensitivity.noised_inputs(stage, x, eps, 0.4)
    expected_logsnr = stage.schedule(jnp.full((4,), 0.4))
    np.testing.assert_allclose(logsnr, expected_logsnr)
    a = jnp.sqrt(jax.nn.sigmoid(expected_logsnr))[:, None, None, None, None]
    s = jnp.sqrt(jax.nn.sigmoid(-expected_logsnr))[:, None, None, None, None]
    np.testing.assert_allclose(z, a * x + s * eps, rtol=1e-5, atol=1e-6)

    flow_stage = LatentDiTStage(tiny_config("latent_dit", data_dir), latent_shape=(2, 4, 4, 4))
    latents = jnp.ones((2, 2, 4, 4, 4))
    z, t = label_sensitivity.noised_inputs(flow_stage, latents, -latents, 0.25)
    np.testing.assert_allclose(t, [0.25, 0.25])
    np.testing.assert_allclose(z, 0.5 * latents, rtol=1e-6)  # 0.75 x + 0.25 eps, eps = -x


def test_stages_without_a_label_alone_are_refused(data_dir):
    stage = build_stage(tiny_config("temporal_sr", data_dir))
    with pytest.raises(ValueError, match="not class-conditional"):
        label_sensitivity.label_effect(stage, None, np.zeros((1, *stage.output_shape)))


def test_cli_mistakes_exit_2_in_one_line(tmp_path, capsys):
    assert label_sensitivity.main(["prog", f"--workdir={tmp_path}"]) == 2
    assert "No checkpoint found" in capsys.readouterr().err
    assert label_sensitivity.main(["prog", f"--workdir={tmp_path}", "--clips=0"]) == 2
    assert "--clips must be >= 1" in capsys.readouterr().err


def _prototype_velocity(prototypes, shift: int):
    """A flow 'network' that knows each class's clip exactly: the velocity (z - x_y) / t that is
    right for clips of class y, answering label y with class y + shift's prototype."""
    num = prototypes.shape[0]

    def model(z, t, label):
        x = prototypes[(label + shift) % num]
        return (z - x) / t[:, None, None, None, None]

    return model


@pytest.mark.parametrize("shift, accuracy", [(0, 1.0), (1, 0.0)])
def test_diffusion_classifier_finds_the_right_label_and_shows_a_permuted_one(
    data_dir, shift, accuracy
):
    stage = LatentDiTStage(tiny_config("latent_dit", data_dir), latent_shape=(2, 4, 4, 4))
    prototypes = jax.random.normal(jax.random.key(0), (10, 2, 4, 4, 4))
    labels = np.arange(20) % 10
    result = label_sensitivity.diffusion_classifier(
        stage, _prototype_velocity(prototypes, shift), prototypes[labels], labels, draws=1
    )
    assert result["accuracy"] == accuracy and result["chance"] == 0.1
    confusion = np.asarray(result["confusion"])
    assert confusion.sum() == 20
    predicted = (np.arange(10) - shift) % 10  # label y answers with class y + shift
    np.testing.assert_array_equal(confusion[np.arange(10), predicted], 2)


def test_regression_target_is_each_familys_training_target(keyframes, data_dir):
    stage, _, clips = keyframes
    x, eps = jnp.asarray(clips), jnp.ones(clips.shape)
    logsnr = jnp.zeros((4,))  # alpha = sigma = sqrt(1/2): v = (eps - x) / sqrt(2)
    np.testing.assert_allclose(
        label_sensitivity.regression_target(stage, x, eps, logsnr),
        (eps - x) / np.sqrt(2.0),
        rtol=1e-5,
        atol=1e-6,
    )
    flow_stage = LatentDiTStage(tiny_config("latent_dit", data_dir), latent_shape=(2, 4, 4, 4))
    np.testing.assert_allclose(
        label_sensitivity.regression_target(flow_stage, x, eps, logsnr), eps - x
    )


def test_main_reads_a_trained_workdir_at_a_kept_step(data_dir, tmp_path, capsys):
    from cascade.training.trainer import Trainer

    # The same tiny training as test_checkpoints (one compile shared through the cache).
    Trainer(tiny_config("keyframes", data_dir, **{"train.num_samples": 0}), tmp_path).train()
    assert label_sensitivity.main(["prog", f"--workdir={tmp_path}", "--step=2", "--clips=4"]) == 0
    out = capsys.readouterr().out
    assert "keyframes at step 2, 4 test clips" in out
    assert "label effect: t=0.2:" in out and "diffusion-classifier accuracy:" in out
    accuracy = float(out.split("diffusion-classifier accuracy: ")[1].split()[0])
    assert 0.0 <= accuracy <= 1.0


def test_label_effect_is_nan_not_infinite_for_a_network_that_outputs_zero(data_dir):
    stage = LatentDiTStage(tiny_config("latent_dit", data_dir), latent_shape=(2, 4, 4, 4))
    effect = label_sensitivity.label_effect(
        stage, lambda z, t, label: jnp.zeros_like(z), np.ones((2, 2, 4, 4, 4)), levels=(0.5,)
    )
    assert np.isnan(effect[0.5])
