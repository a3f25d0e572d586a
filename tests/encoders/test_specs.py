"""Model specs beyond BACKEND:MODEL (bare paths, ``demo``), checkpoints refused for holding
Python code objects, library log lines folded into our errors, the shared batch size."""

from __future__ import annotations

import datetime
import json
import logging
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import tiny_models
from wca import defaults
from wca.cli import main
from wca.encoders import BACKENDS, load_encoder, resolve_spec
from wca.encoders.checkpoints import code_references
from wca.encoders.registry import held_library_logs

PIXELS = torch.randn(2, 3, tiny_models.IMAGE_SIZE, tiny_models.IMAGE_SIZE)


@pytest.fixture(scope="module")
def openai_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = tiny_models.save_openai_state_dict(tmp_path_factory.mktemp("openai"))
    return Path(spec.removeprefix("open_clip:"))


@pytest.fixture
def wca_log() -> list[logging.LogRecord]:
    """The records of the ``wca`` logger at every level, whatever its handlers (the CLI's
    tests may have turned its propagation off)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(logging.DEBUG)
    logger = logging.getLogger("wca")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture
def offline_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty Hugging Face cache and a Hub endpoint that refuses connections (port 9)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf_cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return cache


def _load(spec: str):
    return load_encoder(spec, device="cpu", text_cache=False)


# ----------------------------------------------------------------- code objects


def _state_dict_with(obj, path: Path, protocol: int = 2, legacy: bool = False) -> Path:
    torch.save(
        {"visual.proj": torch.zeros(2), "saved": obj},
        path,
        pickle_protocol=protocol,
        _use_new_zipfile_serialization=not legacy,
    )
    return path


@pytest.mark.filterwarnings("ignore:Detected pickle protocol 4")
@pytest.mark.parametrize("form", ["openai", "arch"])
@pytest.mark.parametrize("layout", ["zip-protocol-2", "zip-protocol-4", "legacy"])
def test_class_reference_is_refused_for_safety_in_one_line(
    tmp_path, monkeypatch, form, layout
):
    """A harmless class (datetime.date) stands for any Python object pickled into a .pt."""
    path = _state_dict_with(
        datetime.date(2024, 1, 1),
        tmp_path / "with-object.pt",
        protocol=4 if layout == "zip-protocol-4" else 2,
        legacy=layout == "legacy",
    )
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    arch = "" if form == "openai" else f"{tiny_models.TINY_ARCH}@"
    if form == "arch":
        tiny_models.save_open_clip_model(tmp_path / "arch")  # registers the architecture
    with pytest.raises(ValueError) as caught:
        _load(f"open_clip:{arch}{path}")
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    assert "contains Python code objects (datetime.date)" in message
    assert "refused for safety" in message
    assert "weights_only" not in message and "corrupt" not in message


def test_refusal_is_told_by_exception_type_and_globals_not_by_wording(
    tmp_path, monkeypatch, openai_file
):
    with_object = _state_dict_with(datetime.date(2024, 1, 1), tmp_path / "with-object.pt")
    assert code_references(with_object) == ["datetime.date"]
    assert code_references(openai_file) == []  # tensors and OrderedDict only

    def refuses(*args, **kwargs):
        raise pickle.UnpicklingError("a future torch words this differently")

    monkeypatch.setattr(torch, "load", refuses)
    with pytest.raises(ValueError, match=r"contains Python code objects \(datetime.date\)"):
        _load(f"open_clip:{with_object}")
    with pytest.raises(ValueError) as caught:  # the pickle refused, but it refers to no code
        _load(f"open_clip:{openai_file}")
    assert "not a readable PyTorch checkpoint" in str(caught.value)
    assert "code objects" not in str(caught.value) and "future torch" not in str(caught.value)


# ----------------------------------------------------------------- model specs


def test_bare_paths_load_with_the_backend_inferred_and_said_at_debug_level(
    tmp_path, monkeypatch, openai_file, wca_log
):
    reference = _load(f"open_clip:{openai_file}").encode_images(PIXELS)
    safetensors_file = tmp_path / "weights.safetensors"
    state = torch.load(openai_file, weights_only=True)
    save_file({key: value.contiguous() for key, value in state.items()}, safetensors_file)
    monkeypatch.chdir(tmp_path)
    for bare in (str(openai_file), "weights.safetensors", "./weights.safetensors"):
        encoder = _load(bare)
        expected = openai_file if bare == str(openai_file) else safetensors_file
        assert encoder.name == f"open_clip:{expected}"
        torch.testing.assert_close(encoder.encode_images(PIXELS), reference)
    said = [r.getMessage() for r in wca_log if r.levelno == logging.DEBUG]
    assert (
        f"model weights.safetensors: an OpenAI-format CLIP checkpoint (architecture "
        f"inferred), loaded as open_clip:{safetensors_file}" in said
    )


@pytest.mark.slow
def test_bare_model_folders_load_as_transformers_or_open_clip(tmp_path, wca_log):
    hf_folder = Path(tiny_models.save_hf_clip_model(tmp_path / "hf").removeprefix("hf:"))
    assert _load(str(hf_folder)).name == f"hf:{hf_folder}"
    assert _load(str(hf_folder / "model.safetensors")).name == f"hf:{hf_folder}"

    weights = Path(tiny_models.save_open_clip_model(tmp_path / "tiny").split("@", 1)[1])
    folder = tmp_path / "open-clip-folder"
    folder.mkdir()
    shutil.copy(weights, folder / "open_clip_pytorch_model.bin")
    config = {"model_cfg": tiny_models.TINY_CONFIG, "preprocess_cfg": {}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    from_folder = _load(str(folder))
    assert from_folder.name == f"open_clip:local-dir:{folder}"
    same = _load(f"open_clip:{tiny_models.TINY_ARCH}@{weights}")
    torch.testing.assert_close(from_folder.encode_images(PIXELS), same.encode_images(PIXELS))
    assert any("an open_clip model folder" in r.getMessage() for r in wca_log)


@pytest.mark.parametrize(
    ("spec", "error", "message"),
    [
        ("missing.pt", FileNotFoundError, "model missing.pt: no such checkpoint file"),
        ("./nowhere", FileNotFoundError, "no such checkpoint file or model folder"),
        ("ViT-B-32", ValueError, "malformed: expected ARCH/TAG, BACKEND:MODEL.*or demo"),
        ("notes.txt", ValueError, r"cannot tell which backend loads a \.txt file"),
        (".", ValueError, "neither config.json .* nor open_clip_config.json"),
    ],
)
def test_bare_paths_that_cannot_load_say_why_in_one_line(
    tmp_path, monkeypatch, spec, error, message
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(error, match=message) as caught:
        _load(spec)
    assert "\n" not in str(caught.value)


def test_demo_names_the_shipped_model_in_every_command(tmp_path, capsys):
    from wca.demo.train import MODEL_FILE

    assert resolve_spec("demo") == (f"open_clip:{MODEL_FILE}", "the shipped demo model")
    encoder = _load("demo")
    assert encoder.name == f"open_clip:{MODEL_FILE}" and encoder.context_length == 77
    # a command that loads a model through the CLI: the tokens of a description file
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"square": ["A red square."]}))
    (tmp_path / "classes.json").write_text('["square"]')
    args = ["descriptions", "check", str(path), "--classes-file", str(tmp_path / "classes.json")]
    assert main([*args, "--model", "demo"]) == 0
    assert capsys.readouterr().out.strip().endswith("ok")


def test_library_log_lines_are_folded_into_our_one_line_error(offline_hub, caplog):
    """open_clip logs ``Failed to download ...`` through the root logger before it raises."""
    handlers = list(logging.getLogger().handlers)
    with pytest.raises(FileNotFoundError) as caught:
        _load("open_clip:ViT-B-32/openai")
    message = str(caught.value)
    assert "\n" not in message and "the model is not on disk" in message
    assert "Failed to download weights for tag 'openai'" in message  # open_clip's line
    assert not [r for r in caplog.records if r.name == "root"]  # held, not logged
    assert logging.getLogger().handlers == handlers


def test_a_failing_backends_log_line_becomes_part_of_its_error(capsys):
    def fails(spec, model, **options):
        logging.getLogger("somelib.loader").warning("Checksum mismatch in shard 3. Retrying.")
        raise ValueError(f"{spec}: cannot load")

    with BACKENDS.temporarily("failing", fails), pytest.raises(ValueError) as caught:
        _load("failing:model")
    assert str(caught.value) == (
        "failing:model: cannot load (somelib logged: Checksum mismatch in shard 3.)"
    )
    assert "Checksum" not in capsys.readouterr().err


def test_transformers_loading_bar_is_not_printed(tmp_path, capsys):
    folder = tiny_models.save_hf_clip_model(tmp_path / "hf").removeprefix("hf:")
    capsys.readouterr()
    _load(folder)
    assert "Loading weights" not in capsys.readouterr().err


def test_held_library_logs_restore_the_handlers_and_keep_the_records():
    root = logging.getLogger()
    before = list(root.handlers)
    with held_library_logs() as records:
        logging.getLogger("open_clip.factory").error("Failed to download weights. Details.")
        logging.getLogger("wca.unrelated").debug("below warning: not held")
    assert root.handlers == before
    assert [r.getMessage() for r in records] == ["Failed to download weights. Details."]


def test_models_command_lists_the_bare_forms(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "/path/file.pt" in out and "/path/folder" in out and "demo" in out


# ----------------------------------------------------------------- batch size


def test_default_batch_size_is_the_clis_and_explicit_values_are_kept(openai_file):
    assert _load(f"open_clip:{openai_file}").batch_size == defaults.BATCH_SIZE
    explicit = load_encoder(f"open_clip:{openai_file}", device="cpu", batch_size=7)
    assert explicit.batch_size == 7
