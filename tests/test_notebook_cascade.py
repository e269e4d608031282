"""notebooks/02_cascade.ipynb in a real kernel: three tiny stages trained, the cascade run
stage by stage, guidance and noise-augmentation sweeps, frame prediction/extension, scores.
Its training runs are also where the trainer's TensorBoard event files are checked."""

import pytest
from notebook_kernel import displayed, run_notebook, text_output
from test_tensorboard import check_training_logs, load_events


@pytest.mark.slow
def test_cascade_notebook(data_dir, tmp_path, monkeypatch):
    # The runner samples with w = 1 and t_aug = 0.1 (configs/cascade.py): one more compiled
    # sampler each for the guidance and the augmentation sweeps.
    params = {"WORKDIR": str(tmp_path / "work"), "DATA_DIR": data_dir, "TRAIN_STEPS": 2}
    params.update(SAMPLE_STEPS=2, NUM_VIDEOS=2, GUIDANCE_SCALES=(0.0, 1.0), AUG_LEVELS=(0.1, 0.5))
    params.update(EXTEND_TO=6, SCALE=2)
    nb = run_notebook("02_cascade.ipynb", params, tmp_path, monkeypatch)
    out = tmp_path / "work" / "02_cascade"
    pictures = ["stage_0_keyframes.png", "stage_1_temporal_sr.png", "stage_2_spatial_sr.png"]
    pictures += ["stages.gif", "stages.png", "guidance.png", "aug_conditioning.png"]
    pictures += ["aug_outputs.png", "predicted.png", "extended.png", "extended.gif"]
    assert all((out / p).stat().st_size > 0 for p in pictures)
    shown = displayed(nb)
    assert shown["image/png"] == 9 and shown["image/gif"] == 2, shown
    printed = text_output(nb)
    assert "runner.sample gives the same videos: True" in printed
    assert "given frames kept exactly: True" in printed
    assert "predicted (2, 4, 8, 8, 1) extended (2, 6, 8, 8, 1)" in printed
    assert printed.count("PSNR vs the real clips") == 2

    # TensorBoard: what the trainer wrote (curves, config, the keyframe stage's previews) and
    # the scores the notebook logged.
    check_training_logs(out / "keyframes", samples=True)
    check_training_logs(out / "spatial_sr", samples=False)
    scores = set(load_events(out / "cascade_eval" / "logs").Tags()["scalars"])
    assert {"eval/spatial_sr_psnr/bilinear", "eval/spatial_sr_psnr/t_aug_0.5"} <= scores, scores
    assert any(s.startswith("eval/generated/digits/") for s in scores), scores
