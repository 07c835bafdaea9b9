"""vaecourse.save / vaecourse.load: round trip, and clear failures on damaged or foreign files."""

import pickle

import pytest
import torch

import vaecourse as vc
from vaecourse.checkpoint import CheckpointError


def model(**fields):
    torch.manual_seed(0)
    return vc.VAE(vc.VAEConfig(**{"data_dim": 20, "latent_dim": 3, "hidden_dims": (16,), **fields}))


def test_round_trip_gives_identical_outputs(tmp_path):
    original = model(scale="exp", min_scale=1e-3, sparse_input=True)
    path = vc.save(original, tmp_path / "sub" / "model.pt", train_config=vc.TrainConfig(epochs=2), metrics={"a": 1})
    restored = vc.load(path)
    assert restored.config == original.config
    x = (torch.rand(6, 20) < 0.4).float()
    q1, q2 = original.encode(x), restored.encode(x)
    assert torch.equal(q1.mean, q2.mean) and torch.equal(q1.stddev, q2.stddev)
    z = torch.randn(4, 3)
    assert torch.equal(original.likelihood(z).mean, restored.likelihood(z).mean)
    assert torch.equal(original.prior.mean, restored.prior.mean)
    assert not restored.training
    payload = vc.checkpoint.read(path)
    assert payload["train_config"]["epochs"] == 2 and payload["metrics"] == {"a": 1}
    torch.load(path, weights_only=True)  # plain values and tensors only
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temporary file left behind


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_missing_truncated_and_foreign_files_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        vc.load(tmp_path / "absent.pt")
    path = vc.save(model(), tmp_path / "model.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        vc.load(truncated)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        vc.load(text)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not a vaecourse VAE checkpoint"):
        vc.load(foreign)
    whole_model = tmp_path / "pickled.pt"
    torch.save(model(), whole_model)  # a pickled module, not a state_dict: refused by weights_only
    with pytest.raises(CheckpointError):
        vc.load(whole_model)
    plain_pickle = tmp_path / "plain.pt"
    plain_pickle.write_bytes(pickle.dumps({"format": "vaecourse.VAE"}))
    with pytest.raises(CheckpointError):
        vc.load(plain_pickle)


def test_mismatched_weights_and_versions_fail_clearly(tmp_path):
    path = vc.save(model(), tmp_path / "model.pt")
    payload = torch.load(path, weights_only=True)
    payload["config"]["latent_dim"] = 5
    torch.save(payload, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="do not make a VAE"):
        vc.load(tmp_path / "mismatch.pt")
    payload = torch.load(path, weights_only=True)
    payload["version"] = 99
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="version 99"):
        vc.load(tmp_path / "future.pt")
    with pytest.raises(ValueError, match="expects a vaecourse VAE"):
        vc.save(torch.nn.Linear(2, 2), tmp_path / "linear.pt")
