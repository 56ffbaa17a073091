"""What a model folder's card and lineage say about how it was made follows the config and the machine."""
from ratchet.core import params
from ratchet.models import lineage

from ..conftest import ROOT


def test_the_card_words_replay_and_ewc_as_the_config_sets_them():
    dapt, sft = params.load(ROOT / "params.yaml", "dapt", "sft")
    off = lineage.rehearsal_words(sft.model_copy(update={"replay_fraction": 0.0, "ewc_lambda": 0.0}))
    assert off == "with no replay and no EWC"
    on = lineage.rehearsal_words(sft.model_copy(update={"replay_fraction": 0.3, "ewc_lambda": 12.5}))
    assert "in 30% of each batch" in on and "EWC penalty towards the champion (lambda 12.5)" in on
    assert "text the champion wrote itself" in lineage.rehearsal_words(dapt.model_copy(
        update={"replay_source": "champion", "replay_fraction": 0.25}))


def test_the_lineage_records_the_device(monkeypatch):
    import torch

    assert lineage.hardware(1)["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "NVIDIA H100")
    assert {"device": "cuda", "gpu": "NVIDIA H100", "threads": 2}.items() <= lineage.hardware(2).items()
