"""Every config key does what it says, or is refused.

For each kind of config (each stage, distill, cascade, single_stage) the code path that config
drives runs cheaply on its tiny preset while every read of a ConfigDict key is recorded:
the trainer's construction (stage, mesh, optimizer, abstract state), a real batch from the
embedded data through `make_batch`, `jax.eval_shape` of the training step and of `sample`;
the distillation trainer and its loss; the runners with their checkpoint loading stubbed.
Then every key of every preset of every config file must be
  - read by that path, or
  - refused by `config_checks.validate` when set to a value that path would ignore (REFUSED), or
  - in ALLOWED: read only by another path, whose source is checked to really read it.
"""

import inspect
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest
from conftest import tiny_config

from cascade import config_checks, configs
from cascade.configs import ConfigError

CONFIG_FILES = sorted(p.stem for p in configs.CONFIG_DIR.glob("*.py"))

# Keys no stage path reads, each refused by validate() at this value (the default is harmless).
REFUSED = {
    "view.extra_images": 2,  # joint image-video training: keyframe stage only
    "diffusion.label_dropout": 0.2,  # unconditional stages have no labels to drop
    "flow.label_dropout": 0.2,
    "sample.guidance_scale": 1.0,
    "sr.crop": 4,  # temporal SR trains on whole frames
}


def _source(obj) -> str:
    return inspect.getsource(obj)


def _trainer_loop():
    from cascade.training.trainer import Trainer

    return _source(Trainer.train) + _source(Trainer.write_samples)


def _streaming():
    from cascade.data import pipeline

    return _source(pipeline._streaming)


def _bench():
    from cascade import bench

    return _source(bench.bench_config) + _source(bench.bench_stage)


def _distill_main():
    from cascade import distillation

    return _source(distillation.main)


def _distill_compare():
    from cascade.training.distillation import DistillationTrainer

    return _source(DistillationTrainer.compare)


# Keys read only by another code path: (where, the text that reads them there).
ALLOWED = {
    # Only streamed (TFRecord) real data sets shuffle through a buffer; the embedded sets are
    # read with random access and shuffled exactly.
    "data.shuffle_buffer": (_streaming, '"shuffle_buffer"'),
    "train.steps": (_trainer_loop, "t.steps"),
    "train.log_every": (_trainer_loop, "t.log_every"),
    "train.checkpoint_every": (_trainer_loop, "t.checkpoint_every"),
    "train.sample_every": (_trainer_loop, "t.sample_every"),
    "train.num_samples": (_trainer_loop, "t.num_samples"),
    "train.max_nonfinite_steps": (_trainer_loop, "t.max_nonfinite_steps"),
    # Metadata: which preset made the config; names cascade.bench's records (and is stored
    # with every checkpoint's config).
    "preset": (_bench, "config.preset"),
    "bench.latent_shape": (_bench, "config.bench.latent_shape"),
    "distill.compare_videos": (_distill_compare, "d.compare_videos"),
    # A distillation config's stage is checked by its entry point (refusing other configs).
    "stage": (_distill_main, "args.config.stage"),
}


class KeyReads:
    """Records `section.key` for every read of a key of the tracked ConfigDicts."""

    def __init__(self, monkeypatch):
        self.prefix: dict[int, str] = {}
        self.read: set[str] = set()
        self._alive = []  # keep tracked dicts alive so their ids stay unique
        original = ml_collections.ConfigDict.__getitem__
        reads = self

        def getitem(cd, key):
            prefix = reads.prefix.get(id(cd))
            if prefix is not None and isinstance(key, str):
                reads.read.add(prefix + key)
            return original(cd, key)

        monkeypatch.setattr(ml_collections.ConfigDict, "__getitem__", getitem)
        # Model sections are consumed whole by their dataclass (which is their schema).
        for module in ("cascade.stages.gaussian", "cascade.stages.video_vae"):
            self._wrap_build_dataclass(monkeypatch, module)
        self._wrap_build_dataclass(monkeypatch, "cascade.stages.latent_dit")

    def _wrap_build_dataclass(self, monkeypatch, module_name):
        import importlib

        module = importlib.import_module(module_name)
        original = module.build_dataclass

        def build(cls, section, where):
            prefix = self.prefix.get(id(section))
            if prefix is not None:
                self.read.update(prefix + k for k in section.keys())
            return original(cls, section, where)

        monkeypatch.setattr(module, "build_dataclass", build)

    def track(self, config: ml_collections.ConfigDict, prefix: str = "") -> None:
        self._alive.append(config)
        self.prefix[id(config)] = prefix
        for key, value in config._fields.items():
            if isinstance(value, ml_collections.ConfigDict):
                self.track(value, f"{prefix}{key}.")


def leaf_keys(config: ml_collections.ConfigDict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in config._fields.items():
        if isinstance(value, ml_collections.ConfigDict):
            keys |= leaf_keys(value, f"{prefix}{key}.")
        else:
            keys.add(prefix + key)
    return keys


# -- the code paths -----------------------------------------------------------------------------
def _fake_trained(config):
    """A TrainedStage as load_trained returns it, with untrained (zero) weights."""
    from cascade.stages import build_stage
    from cascade.stages.stage import model_graphdef
    from cascade.training.train_state import init_state, make_optimizer
    from cascade.training.trained import TrainedStage

    stage = build_stage(config)
    tx = make_optimizer(config.train)
    abstract = jax.eval_shape(lambda key: init_state(stage, tx, key), jax.random.key(0))
    # Zero weights (host arrays): the reads of the config do not depend on their values, and
    # initialising for real costs a long XLA compile on CPU.
    params = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), abstract["params"])
    return TrainedStage(config, stage, model_graphdef(stage), params, 0, Path("."), None)


def walk_stage(config, reads: KeyReads, tmp_path, monkeypatch) -> None:
    from cascade.stages.stage import merge_model
    from cascade.training import trained
    from cascade.training.trainer import Trainer

    if config.stage == "latent_dit":
        # Its VAE: an untrained video_vae of the same view, as small as compiles fastest; a
        # given latent scale (read all the same) skips measuring it (one more compile).
        vae_config = tiny_config("video_vae", config.data.data_dir)
        vae_config.view.update(frames=config.view.frames, resolution=config.view.resolution)
        vae_config.model.update(
            base_channels=4, channel_mults=(1, 2), spatial_downsample=2, temporal_downsample=2
        )
        vae = _fake_trained(vae_config)
        monkeypatch.setattr(trained, "load_trained", lambda workdir, *a, **k: vae)
        config.vae.latent_scale = 1.0
    config_checks.validate(config)
    reads.track(config)
    trainer = Trainer(config, tmp_path / "run")
    batch = next(trainer.batches(0))
    jax.eval_shape(trainer.train_step, trainer.abstract_state, batch)
    stage, graphdef = trainer.stage, trainer.graphdef
    cond = trainer.sampler.test_conditioning(config, 2)  # what sampling conditions on
    jax.eval_shape(
        lambda p, c, k: stage.sample(merge_model(graphdef, p), k, c),
        trainer.abstract_state["ema_params"],
        cond,
        jax.random.key(0),
    )


def walk_distill(config, reads: KeyReads, tmp_path, monkeypatch) -> None:
    import cascade.training.distillation as distillation
    from cascade.stages.stage import merge_model

    # As stored in a checkpoint: a plain (unlocked) copy of the teacher's config.
    teacher = tiny_config("keyframes", DATA_DIR[0]).to_dict()
    monkeypatch.setattr(
        distillation, "config_from_checkpoint", lambda w: ml_collections.ConfigDict(teacher)
    )
    config.distill.teacher_workdir = str(tmp_path / "teacher")
    config_checks.validate(config)
    original = distillation.student_config

    def student_config(cfg):
        # The student's config copies the distillation's sections: its reads are theirs.
        student = original(cfg)
        for name in ("train", "mesh", "distill"):
            reads.track(student[name], f"{name}.")
        return student

    monkeypatch.setattr(distillation, "student_config", student_config)
    reads.track(config)
    trainer = distillation.DistillationTrainer(config, tmp_path / "run")
    batch = next(trainer.batches(0))
    params = trainer.abstract_state["params"]
    jax.eval_shape(
        lambda p, b, k, t: trainer.distill_loss(merge_model(trainer.graphdef, p), b, k, t, 2),
        params,
        batch,
        jax.random.key(0),
        params,
    )


class _StubTrained:
    """Stands in for a restored stage: real config and stage, outputs of the right shape."""

    def __init__(self, config):
        from cascade.stages import build_stage

        self.config, self.params = config, {"w": np.zeros(3)}
        if config.stage == "latent_dit":
            self.stage = type("S", (), {"output_shape": (2, 4, 4, 4)})()
            self.stage.to_video = lambda z: np.zeros((len(z), 5, 16, 16, 1), np.float32)
            self.stage.vae = self
        else:
            self.stage = build_stage(config)

    def sample(self, cond, key, steps=None):
        return np.zeros((len(cond["label"]), *self.stage.output_shape), np.float32)


def walk_runner(config, reads: KeyReads, tmp_path, monkeypatch) -> None:
    from cascade.sampling import runners

    data_dir = DATA_DIR[0]
    if config.stage == "cascade":
        stored = {  # as stored in checkpoints: plain (unlocked) copies
            name: ml_collections.ConfigDict(tiny_config(name, data_dir).to_dict())
            for name in config.order
        }
        for name in config.order:
            config.stages[name].workdir = name
        monkeypatch.setattr(runners, "config_from_checkpoint", lambda w: stored[w])
        monkeypatch.setattr(runners, "load_trained", lambda w, c, mesh, step: _StubTrained(c))
    else:
        dit = ml_collections.ConfigDict(tiny_config("latent_dit", data_dir).to_dict())
        monkeypatch.setattr(runners, "config_from_checkpoint", lambda w: dit)
        monkeypatch.setattr(runners, "load_trained", lambda w, c, mesh, step: _StubTrained(c))
    config_checks.validate(config)
    reads.track(config)
    runner = runners.build_runner(config)
    runner.write(tmp_path / "out")


DATA_DIR: list[str] = []


@pytest.fixture(scope="module")
def read_keys(data_dir, tmp_path_factory):
    """{config file: keys its tiny (or default) preset's code path read}."""
    DATA_DIR[:] = [data_dir]
    result = {}
    for name in CONFIG_FILES:
        mp = pytest.MonkeyPatch()
        try:
            reads = KeyReads(mp)
            tmp = tmp_path_factory.mktemp(name)
            config = configs.load(f"{name}:tiny")
            if "data" in config:
                config.data.data_dir = data_dir
            if config.stage in ("cascade", "single_stage"):
                walk_runner(config, reads, tmp, mp)
            elif config.stage == "distill":
                walk_distill(config, reads, tmp, mp)
            else:
                walk_stage(config, reads, tmp, mp)
            result[name] = reads.read
        finally:
            mp.undo()
    return result


def _presets(name: str) -> list[str]:
    import importlib.util

    path = configs.CONFIG_DIR / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_keys_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return sorted(module.PRESETS)


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_every_key_is_read_or_refused(name, read_keys):
    read = read_keys[name]
    for preset in _presets(name):
        config = configs.load(f"{name}:{preset}")
        checked = config.copy_and_resolve_references()
        if checked.stage == "distill":
            checked.distill.teacher_workdir = "teacher"  # a required path, checked elsewhere
        config_checks.validate(checked)  # every shipped preset is a valid config
        for key in sorted(leaf_keys(config) - read):
            if key in ALLOWED:
                source, text = ALLOWED[key]
                assert text in source(), f"{key}: {source.__name__} no longer reads {text!r}"
                continue
            assert key in REFUSED, (
                f"{name}:{preset}: config.{key} is never read by the {config.stage} code path "
                "and not refused by configs.validate: honour it or refuse it."
            )
            probe = configs.load(f"{name}:tiny")
            section, _, leaf = key.rpartition(".")
            probe[section][leaf] = REFUSED[key]
            with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
                config_checks.validate(probe)


def test_key_reads_are_recorded(monkeypatch):
    """The recorder itself: a read key is recorded with its section, an unread one is not."""
    reads = KeyReads(monkeypatch)
    config = ml_collections.ConfigDict({"train": {"steps": 1, "unused": 2}})
    reads.track(config)
    assert config.train.steps == 1
    assert reads.read == {"train", "train.steps"}


def test_dataset_names_match_the_loader():
    from cascade import config_checks
    from cascade.data import loading

    assert config_checks.KNOWN_DATASETS == loading.KNOWN_DATASETS
