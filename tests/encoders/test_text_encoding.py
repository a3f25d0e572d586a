"""Text encoding: token counts and over-long descriptions, progress and large-file notices, and
the text-embedding cache on disk."""

from __future__ import annotations

import io
import logging
import sys
from pathlib import Path

import open_clip
import pytest
import torch

import tiny_models
from fake_encoder import FakeEncoder
from wca import defaults
from wca.encoders import check_texts, load_encoder
from wca.encoders import tokens as tokens_module

SHORT = "a photo of a cat."
LONG = "a very long description of a small bird with a red head and " * 3  # 40+ tokens
TEXTS = [SHORT, "a dog on grass.", "a red car.", LONG, "x"]


@pytest.fixture(scope="module")
def specs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tiny_models")
    return {
        "open_clip": tiny_models.save_open_clip_model(root / "open_clip"),
        "openai": tiny_models.save_openai_state_dict(root / "openai"),
        "openai_other": tiny_models.save_openai_state_dict(root / "openai_other", seed=1),
        "hf_clip": tiny_models.save_hf_clip_model(root / "hf_clip"),
        "hf_siglip": tiny_models.save_hf_siglip_model(root / "hf_siglip"),
    }


@pytest.fixture
def wca_log() -> list[logging.LogRecord]:
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


def _messages(records: list[logging.LogRecord], level: int) -> list[str]:
    return [record.getMessage() for record in records if record.levelno == level]


def _count_model_calls(monkeypatch, encoder, method: str = "_text_features") -> list[int]:
    """Texts per call of the encoder's ``method`` (its model side)."""
    calls: list[int] = []
    original = getattr(encoder, method)

    def counted(texts):
        calls.append(len(texts))
        return original(texts)

    monkeypatch.setattr(encoder, method, counted)
    return calls


# ----------------------------------------------------- texts over the context


@pytest.mark.parametrize(
    ("kind", "context"), [("open_clip", 77), ("openai", 77), ("hf_clip", 77), ("hf_siglip", 16)]
)
def test_encoders_count_tokens_and_know_their_context(specs, kind, context):
    encoder = load_encoder(specs[kind], device="cpu", text_cache=False)
    assert encoder.context_length == context
    short, long = encoder.token_counts([SHORT, LONG * 3])
    if kind.startswith("hf"):
        expected = len(encoder.tokenizer(SHORT)["input_ids"])
    else:
        expected = int((open_clip.tokenize([SHORT])[0] != 0).sum())
    assert short == expected and long > context


def test_check_texts_warns_once_per_file_with_the_count_and_first_offender(specs, wca_log):
    encoder = load_encoder(specs["hf_siglip"], device="cpu", text_cache=False)  # 16 tokens
    descriptions = {"cat": [SHORT, "a cat " * 12], "dog": ["a dog " * 20, "a dog."]}
    report = check_texts(encoder, descriptions, "animals.json")
    assert report.n_texts == 4 and report.context == 16
    assert [(long.label, long.tokens > 16) for long in report.long] == [
        ("cat", True),
        ("dog", True),
    ]
    (warning,) = _messages(wca_log, logging.WARNING)
    assert warning.startswith("animals.json: 2 of 4 descriptions are longer than the 16-token")
    assert "the first: cat: 'a cat a cat" in warning and "\n" not in warning
    check_texts(encoder, descriptions, "animals.json")  # the same file again: no second line
    check_texts(encoder, {"owl": ["an owl " * 20]}, "birds.json")
    assert len(_messages(wca_log, logging.WARNING)) == 2
    # texts that all fit say nothing
    check_texts(encoder, [SHORT], "short.json")
    assert len(_messages(wca_log, logging.WARNING)) == 2


def test_encoders_that_cannot_count_get_no_truncation_check(wca_log):
    report = check_texts(FakeEncoder(), ["a" * 1000], "fake.json")
    assert report.context is None and report.long == []
    assert _messages(wca_log, logging.WARNING) == []


# ----------------------------------------------------- progress and notices


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("stream", "progress", "shown"),
    [(_Terminal, None, True), (io.StringIO, None, True), (_Terminal, False, False)],
)
def test_text_encoding_shows_its_progress_unless_turned_off(
    specs, monkeypatch, stream, progress, shown
):
    """A bar on a terminal; whole lines elsewhere (wca.progress: no \r in a log)."""
    encoder = load_encoder(specs["open_clip"], device="cpu", batch_size=2, text_cache=False)
    err = stream()
    monkeypatch.setattr(sys, "stderr", err)
    encoder.encode_texts(TEXTS, progress=progress)
    assert ("encoding texts" in err.getvalue()) is shown
    if shown:
        assert "0/5" in err.getvalue()  # the total, on the first frame
    if stream is io.StringIO:
        assert "\r" not in err.getvalue()


def test_encoder_progress_setting_and_one_batch_show_no_bar(specs, monkeypatch):
    encoder = load_encoder(specs["open_clip"], device="cpu", batch_size=2, text_cache=False)
    err = _Terminal()
    monkeypatch.setattr(sys, "stderr", err)
    encoder.encode_texts(TEXTS[:2])  # one batch: nothing to watch
    encoder.progress = False  # what the CLI sets for --no-progress and -q
    encoder.encode_texts(TEXTS[2:])
    assert err.getvalue() == ""


def test_a_large_file_gets_a_one_line_notice_with_its_count(monkeypatch, wca_log):
    monkeypatch.setattr(tokens_module, "LARGE_FILE", 3)
    check_texts(FakeEncoder(), {"a": ["1", "2"], "b": ["3"]}, "three.json")
    assert _messages(wca_log, logging.INFO) == []
    check_texts(FakeEncoder(), {"a": ["1", "2"], "b": ["3", "4"]}, "four.json")
    (notice,) = _messages(wca_log, logging.INFO)
    assert notice.startswith("four.json: 4 sentences; encoding them takes a while")


def test_large_file_default_threshold_is_100000():
    assert tokens_module.LARGE_FILE == 100_000


# ----------------------------------------------------- the text cache on disk


def test_a_fresh_encoder_of_the_same_model_encodes_no_text(specs, tmp_path, monkeypatch):
    first = load_encoder(specs["open_clip"], device="cpu", text_cache=tmp_path)
    check_texts(first, TEXTS, "texts.json")  # counts tokens, kept with the embeddings
    expected = first.encode_texts(TEXTS)
    again = load_encoder(specs["open_clip"], device="cpu", text_cache=tmp_path)
    encoded = _count_model_calls(monkeypatch, again)
    counted = _count_model_calls(monkeypatch, again, "_count_tokens")
    check_texts(again, TEXTS, "texts.json")
    assert torch.equal(again.encode_texts(TEXTS), expected)
    assert encoded == [] and counted == []
    assert again.text_cache_dir == tmp_path
    # a text not seen before is the only one encoded
    again.encode_texts([*TEXTS, "a new text"])
    assert encoded == [1]


def test_another_model_identity_does_not_share_entries(specs, tmp_path, monkeypatch):
    first = load_encoder(specs["openai"], device="cpu", text_cache=tmp_path)
    embeddings = first.encode_texts(TEXTS)
    other = load_encoder(specs["openai_other"], device="cpu", text_cache=tmp_path)
    calls = _count_model_calls(monkeypatch, other)
    assert not torch.allclose(other.encode_texts(TEXTS), embeddings)
    assert sum(calls) == len(TEXTS)
    at_bf16 = load_encoder(specs["openai"], device="cpu", precision="bf16", text_cache=tmp_path)
    calls = _count_model_calls(monkeypatch, at_bf16)
    at_bf16.encode_texts(TEXTS)
    assert sum(calls) == len(TEXTS)  # another precision, other numbers: not shared either
    assert len(list(tmp_path.iterdir())) == 3


def test_a_damaged_shard_is_recomputed_with_one_warning(specs, tmp_path, monkeypatch, wca_log):
    expected = load_encoder(specs["open_clip"], device="cpu", text_cache=tmp_path).encode_texts(
        TEXTS
    )
    (shard,) = tmp_path.glob("*/*.safetensors")
    data = bytearray(shard.read_bytes())
    data[-20] ^= 0xFF  # one flipped byte in the embeddings
    shard.write_bytes(bytes(data))
    fresh = load_encoder(specs["open_clip"], device="cpu", text_cache=tmp_path)
    calls = _count_model_calls(monkeypatch, fresh)
    torch.testing.assert_close(fresh.encode_texts(TEXTS), expected, atol=1e-6, rtol=0)
    assert sum(calls) == len(TEXTS)
    (warning,) = _messages(wca_log, logging.WARNING)
    assert str(shard) in warning and "checksum" in warning and "encoded again" in warning
    assert load_encoder(specs["open_clip"], device="cpu", text_cache=tmp_path).encode_texts(
        TEXTS
    ).shape == (len(TEXTS), tiny_models.EMBED_DIM)
    assert len(_messages(wca_log, logging.WARNING)) == 1  # the rewritten shard reads clean


def test_a_cache_that_cannot_be_written_warns_once_and_loses_nothing(specs, tmp_path, wca_log):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    encoder = load_encoder(specs["open_clip"], device="cpu", text_cache=blocked)
    embeddings = encoder.encode_texts(TEXTS)
    assert embeddings.shape == (len(TEXTS), tiny_models.EMBED_DIM)
    encoder.encode_texts(["more"])
    (warning,) = _messages(wca_log, logging.WARNING)
    assert warning.startswith("text cache: cannot write to") and encoder.text_cache_dir is None


def test_the_cache_is_in_the_user_cache_folder_and_can_be_turned_off(specs, tmp_path, monkeypatch):
    monkeypatch.setenv("WCA_CACHE_DIR", str(tmp_path / "cache"))
    encoder = load_encoder(specs["open_clip"], device="cpu")
    assert encoder.text_cache_dir == defaults.cache_dir("texts") == tmp_path / "cache" / "texts"
    encoder.encode_texts([SHORT])
    assert list((tmp_path / "cache" / "texts").glob("*/*.safetensors"))
    off = load_encoder(specs["open_clip"], device="cpu", text_cache=False)
    assert off.text_cache_dir is None
    encoder.text_cache_dir = None  # the attribute turns it off too
    assert encoder.text_cache_dir is None
    assert isinstance(off.text_cache_dir, Path | None)
