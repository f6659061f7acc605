"""Any method scored as `evaluate` scores ours: `predict` on evaluate's prompts, then
`evaluate-predictions --task all`, equals `evaluate` itself; bad prediction files are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ground_truth import training_params
from uniseg3d.cli import main
from uniseg3d.datasets.cache import read_scene
from uniseg3d.datasets.prompt_files import PROMPTS_DIR, read_prompts
from uniseg3d.datasets.scene import InputError
from uniseg3d.metrics.scene_stats import read_evaluation
from uniseg3d.pipelines.evaluate import METRICS_FILE, run_evaluate
from uniseg3d.pipelines.predict import run_predict_prompts
from uniseg3d.pipelines.prediction_files import FORMAT_VERSION, PREDICTIONS_FILE
from uniseg3d.pipelines.score_predictions import score_predictions
from uniseg3d.pipelines.train import train

SECTIONS = ("semantic", "instance", "panoptic", "interactive", "referring", "open_vocab",
            "replica")


@pytest.fixture(scope="module")
def run(data: Path, tmp_path_factory) -> dict:
    """A one-epoch checkpoint evaluated on the two scenes and the Replica scene, `predict` run
    on evaluate's prompts of every scene, and those predictions scored."""
    root = tmp_path_factory.mktemp("score_predictions")
    params = training_params(data, root, protocol_clicks=0)
    train(params, progress=False)
    metrics = run_evaluate(params, progress=False)
    ours = Path(params.evaluate.out)
    prompts = ours / PROMPTS_DIR
    run_predict_prompts(params, prompts, root / "pred")
    scored = score_predictions(params, prompts, root / "pred", root / "scored", "predict")
    return {"params": params, "root": root, "ours": ours, "prompts": prompts,
            "metrics": metrics, "scored": scored}


def assert_close(ours: object, theirs: object, where: str) -> None:
    if isinstance(ours, dict):
        assert set(ours) == set(theirs), where
        for key in ours:
            assert_close(ours[key], theirs[key], f"{where}.{key}")
    elif ours is None:
        assert theirs is None, where
    else:
        assert theirs == pytest.approx(ours, abs=1e-9, rel=0), where


def test_the_prompts_are_the_ones_evaluate_used(run):
    prompts = {p.stem: read_prompts(p) for p in sorted(run["prompts"].glob("*.json"))}
    assert set(prompts) == {"scene0000_00", "scene0001_00", "room_0"}
    scene = prompts["scene0000_00"]
    assert scene.benchmark == "scannet" and scene.index == 0
    assert scene.texts == ["the chair next to the table", "the large table in the middle"]
    document = json.loads((run["prompts"] / "scene0000_00.json").read_text())
    assert [(d["object_id"], d["ann_id"]) for d in document["descriptions"]] == [(2, 0), (3, 1)]
    assert len(scene.classes) == 200 and scene.classes[0] == "wall"
    counts = run["metrics"]["counts"]
    assert sum(len(p.click_points) for p in prompts.values() if p.benchmark == "scannet") \
        == counts["clicks"]
    assert prompts["room_0"].benchmark == "replica" and "table lamp" in prompts["room_0"].classes


def test_predict_outputs_score_exactly_as_evaluate(run):
    ours, theirs = run["metrics"], run["scored"]
    assert theirs["method"] == "predict" and theirs["dataset"] == "unit-test"
    for section in SECTIONS:
        assert_close(ours[section], theirs[section], section)
    assert theirs["counts"] == ours["counts"]
    scored = run["root"] / "scored"
    assert json.loads((scored / METRICS_FILE).read_text()) == theirs
    for task in ("semantic", "instance", "panoptic", "open_vocab"):
        pd.testing.assert_frame_equal(pd.read_csv(scored / f"per_class_{task}.csv"),
                                      pd.read_csv(run["ours"] / f"per_class_{task}.csv"),
                                      check_exact=False, rtol=0, atol=1e-9)
    reference, recomputed = (read_evaluation(run["ours"]), read_evaluation(scored))
    assert set(recomputed) == set(SECTIONS)
    for task, stats in recomputed.items():
        assert stats.scene_ids == reference[task].scene_ids
        assert stats.meta == reference[task].meta
        for name, values in stats.sums.items():
            np.testing.assert_allclose(values, reference[task].sums[name], rtol=0, atol=1e-9)
        assert set(stats.tables) == set(reference[task].tables)
        for table, columns in stats.tables.items():
            for name, values in columns.items():
                np.testing.assert_allclose(values, reference[task].tables[table][name], rtol=0,
                                           atol=1e-9, err_msg=f"{task} {table}.{name}")


def params_file(run: dict, folder: Path) -> str:
    """A params.yaml naming the fixture's caches (YAML reads JSON)."""
    cfg = run["params"].evaluate
    path = folder / "params.yaml"
    path.write_text(json.dumps({"evaluate": {
        "cache": cfg.cache, "scenes": cfg.scenes, "replica_cache": cfg.replica_cache,
        "dataset_label": cfg.dataset_label}}))
    return str(path)


def test_the_commands_predict_score_and_compare(run, tmp_path):
    params, pred, out = params_file(run, tmp_path), tmp_path / "pred", tmp_path / "other"
    assert main(["predict", "--prompts", str(run["prompts"]), "--checkpoint",
                 run["params"].evaluate.checkpoint, "--out", str(pred), "--params", params]) == 0
    assert main(["evaluate-predictions", "--task", "all", "--prompts", str(run["prompts"]),
                 "--pred", str(pred), "--out", str(out), "--method", "other",
                 "--params", params]) == 0
    assert json.loads((out / METRICS_FILE).read_text())["semantic"] \
        == run["scored"]["semantic"]
    board = pd.read_csv(out / "leaderboards" / "instance.csv")
    assert "other (unit-test)" in set(board["method"])
    assert main(["compare", str(run["ours"]), str(out), "--out",
                 str(tmp_path / "compare"), "--resamples", "50"]) == 0


def test_ground_truth_as_predictions_scores_one(run, tmp_path):
    """The scorer reads the files: the semantic labels and the descriptions' masks replaced by
    the ground truth score 1."""
    pred = tmp_path / "pred"
    shutil.copytree(run["root"] / "pred", pred)
    for path in sorted(run["prompts"].glob("scene*.json")):
        prompts = read_prompts(path)
        scene = read_scene(Path(run["params"].evaluate.cache) / prompts.scene_id)
        rewrite(pred / prompts.scene_id / PREDICTIONS_FILE, lambda a: a.update(
            semantic=np.maximum(scene.semantic20, 0),  # unlabelled points do not count
            text_masks=scene.instance[None, :] == prompts.text_instances[:, None]))
    scored = score_predictions(run["params"], run["prompts"], pred, tmp_path / "out", "gt")
    assert run["scored"]["semantic"]["miou"] < 1.0 and run["scored"]["referring"]["miou"] < 1.0
    assert scored["semantic"]["miou"] == 1.0
    assert scored["referring"]["miou"] == pytest.approx(1.0, abs=1e-9)  # I / (U + 1e-8)
    assert scored["instance"] == run["scored"]["instance"]


def rewrite(path: Path, change) -> None:
    with np.load(path) as npz:
        arrays = {key: npz[key] for key in npz.files}
    change(arrays)
    np.savez(path, **arrays)


BAD = {
    "wrong point count": (lambda a: a.update(semantic=a["semantic"][:-1]),
                          "field 'semantic': expected N = "),
    "NaN score": (lambda a: a["click_class_probs"].__setitem__((0, 0), np.nan),
                  "field 'click_class_probs': expected finite values"),
    "infinite score": (lambda a: a.update(instance_scores=np.full(3, np.inf, np.float32),
                                          instance_labels=np.full(3, 4),
                                          instance_masks=np.ones((3, len(a["semantic"])), bool)),
                       "field 'instance_scores': expected finite values"),
    "mask not boolean": (lambda a: a.update(text_masks=a["text_masks"].astype(np.uint8)),
                         "field 'text_masks': expected a boolean array"),
    "unknown key": (lambda a: a.update(extra=np.zeros(1)), "field 'extra': expected only"),
    "missing key": (lambda a: a.pop("open_vocab_scores"),
                    "field 'open_vocab_scores': expected a key of format version"),
    "label outside the class list": (lambda a: a.update(open_vocab_labels=np.full_like(
        a["open_vocab_labels"], 200)), "field 'open_vocab_labels': expected values in [0, 199]"),
    "other format version": (lambda a: a.update(format_version=np.int64(FORMAT_VERSION + 1)),
                             "field 'format_version'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_prediction_files_are_refused_and_nothing_is_written(run, tmp_path, case):
    change, message = BAD[case]
    pred = tmp_path / "pred"
    shutil.copytree(run["root"] / "pred", pred)
    rewrite(pred / "scene0001_00" / PREDICTIONS_FILE, change)
    with pytest.raises(InputError, match="scene0001_00") as error:
        score_predictions(run["params"], run["prompts"], pred, tmp_path / "out", "bad")
    assert message in str(error.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["missing scene", "extra scene", "not an npz", "an npy"])
def test_bad_prediction_folders_are_refused_and_nothing_is_written(run, tmp_path, case):
    pred = tmp_path / "pred"
    shutil.copytree(run["root"] / "pred", pred)
    if case == "missing scene":
        shutil.rmtree(pred / "scene0001_00")
        expected = "scene0001_00/predictions.npz: field 'file': expected the predictions of " \
                   "scene scene0001_00"
    elif case == "extra scene":
        shutil.copytree(pred / "scene0001_00", pred / "scene0002_00")
        expected = "scene0002_00/predictions.npz: field 'scene': expected a scene of the " \
                   "prompts folder"
    elif case == "not an npz":
        (pred / "scene0001_00" / PREDICTIONS_FILE).write_text("semantic\n0\n1\n")
        expected = "scene0001_00/predictions.npz: field 'file': expected an npz archive"
    else:
        with open(pred / "scene0001_00" / PREDICTIONS_FILE, "wb") as file:
            np.save(file, np.zeros(3))
        expected = "scene0001_00/predictions.npz: field 'file': expected an npz archive " \
                   "(numpy.savez) without pickled objects, found a single .npy array"
    with pytest.raises(InputError) as error:
        score_predictions(run["params"], run["prompts"], pred, tmp_path / "out", "bad")
    assert expected in str(error.value)
    assert not (tmp_path / "out").exists()
    assert main(["evaluate-predictions", "--task", "all", "--prompts", str(run["prompts"]),
                 "--pred", str(pred), "--out", str(tmp_path / "out"),
                 "--params", params_file(run, tmp_path)]) == 2


BAD_PROMPTS = {
    "class list": (lambda d: d["classes"].reverse(), "field 'classes': expected the 200"),
    "click point": (lambda d: d["clicks"][0].update(point=d["points"]),
                    "field 'clicks[0].point': expected an index in [0, "),
    "description": (lambda d: d["descriptions"][1].pop("instance"),
                    "field 'descriptions[1].instance': expected an integer, found nothing"),
    "format version": (lambda d: d.update(format_version=2), "field 'format_version'"),
}


@pytest.mark.parametrize("case", sorted(BAD_PROMPTS))
def test_bad_prompt_files_are_refused(run, tmp_path, case):
    change, message = BAD_PROMPTS[case]
    prompts = tmp_path / "prompts"
    shutil.copytree(run["prompts"], prompts)
    path = prompts / "scene0001_00.json"
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))
    with pytest.raises(InputError, match="scene0001_00.json") as error:
        score_predictions(run["params"], prompts, run["root"] / "pred", tmp_path / "out", "bad")
    assert message in str(error.value)
    assert not (tmp_path / "out").exists()
