"""The model artifact: round trip, atomic writes, corrupt files."""
import zipfile

import numpy as np
import pytest

from trainer import model
from trainer.data import Vocab
from trainer.errors import TrainerError
from trainer.model import Artifact, ModelConfig


def tiny_artifact(cell="gru", seed=0) -> Artifact:
    cfg = ModelConfig(cell=cell, layers=2, units=16, embedding=8)
    vocab = Vocab(list("abc xyz"))
    keras_model = model.build_model(cfg, len(vocab))
    rng = np.random.default_rng(seed)
    weights = [rng.normal(0, 0.3, w.shape).astype(np.float32) for w in keras_model.get_weights()]
    return Artifact(cfg, vocab, weights, {"kind": "test", "heldout_bits_per_char": 1.5})


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_save_load_round_trip(tmp_path, cell):
    art = tiny_artifact(cell)
    model.save(art, tmp_path / "m.zip")
    back = model.load(tmp_path / "m.zip")
    assert back.config == art.config
    assert back.vocab.itos == art.vocab.itos
    assert back.meta == art.meta
    assert len(back.weights) == len(art.weights)
    for a, b in zip(art.weights, back.weights):
        np.testing.assert_array_equal(a, b)
    # and the Keras network built from it computes the same thing
    x = np.array([[1, 3, 4, 5]], np.int32)
    np.testing.assert_allclose(model.to_keras(art)(x), model.to_keras(back)(x), rtol=1e-6)


def test_a_failed_write_never_replaces_a_good_model(tmp_path, monkeypatch):
    path = tmp_path / "m.zip"
    good = tiny_artifact(seed=1)
    model.save(good, path)
    before = path.read_bytes()

    real_writestr = zipfile.ZipFile.writestr
    calls = []

    def dying_writestr(self, name, data, *a, **k):
        calls.append(name)
        if name == "weights.npz":
            raise OSError("disk full")  # the process dies halfway through the new file
        return real_writestr(self, name, data, *a, **k)

    monkeypatch.setattr(zipfile.ZipFile, "writestr", dying_writestr)
    with pytest.raises(OSError):
        model.save(tiny_artifact(seed=2), path)
    assert calls == ["meta.json", "weights.npz"]
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.zip"]  # no temp file left behind
    monkeypatch.undo()
    np.testing.assert_array_equal(model.load(path).weights[0], good.weights[0])


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "missing-weights"])
def test_corrupt_model_files_give_one_line_errors(tmp_path, damage):
    path = tmp_path / "m.zip"
    model.save(tiny_artifact(), path)
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a zip at all")
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("meta.json", "{}")
    with pytest.raises(TrainerError, match="not a valid model file") as err:
        model.load(path)
    assert "\n" not in str(err.value)


def test_missing_model_file(tmp_path):
    with pytest.raises(TrainerError, match="no such model file"):
        model.load(tmp_path / "absent.zip")
