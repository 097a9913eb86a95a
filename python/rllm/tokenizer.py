"""GGUF tokenizer metadata -> a Hugging Face ``tokenizers.Tokenizer`` that matches llama.cpp.

The reference is llama.cpp ``src/llama-vocab.cpp`` (``llama_vocab::impl::load``, ``tokenize``,
``token_to_piece``, ``detokenize``) and ``src/unicode.cpp`` (pre-tokenizer regexes). Token ids
must be identical to ``llama_tokenize``; decoded text identical to ``llama_detokenize``.

* ``tokenizer.ggml.model == "gpt2"``: byte-level BPE from ``tokens`` + ``merges``, split first
  by the regex list that ``tokenizer.ggml.pre`` names.
* ``tokenizer.ggml.model == "llama"``: SentencePiece as llama.cpp runs it: repeatedly merge the
  adjacent pair whose concatenation is the highest-scoring token, fall back to ``<0xXX>`` byte
  tokens. Expressed as a BPE model whose merges are every (left, right) split of every token,
  ranked by the merged token's score, plus ``byte_fallback``.
* ``tokenizer.ggml.model == "bert"``: WordPiece as llama.cpp runs it (``llm_tokenizer_wpm``):
  words split at whitespace and punctuation (BERT's normalizer: control characters dropped,
  CJK characters alone, optional lowercasing and accent stripping from
  ``tokenizer.ggml.normalizer.*``), each word prefixed with ``▁`` and cut into the longest
  tokens from its start; a word that cannot be cut is ``[UNK]``. ``[CLS]`` and ``[SEP]``
  surround the text when special tokens are added.
* Control (type 3) and unknown (2) tokens are matched in text only with ``parse_special``;
  user-defined (4) tokens always, as llama.cpp does. They are added tokens of the HF
  tokenizer too, but ``encode`` splits them out itself first: llama.cpp tries the longest
  special text first rather than HF's leftmost-longest, and strips with C ``isspace``.

BPE merging runs inside ``tokenizers``; decoding is done here from the token texts, because
llama.cpp's rules (byte tokens, ``clean_spaces``, the first-token space strip) differ from any
stock HF decoder. Nothing is cached on disk and the Rust extension is not imported.
"""

from __future__ import annotations

import codecs
import os
import re
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import compress, repeat
from typing import Any

from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from . import _rllm
from .errors import GGUFError

__all__ = ["Detokenizer", "Tokenizer", "TokenizerError"]


class TokenizerError(GGUFError):
    """Unsupported or malformed tokenizer metadata; the message names the key and value.
    A ``GGUFError`` (and so a ``ValueError``): the metadata comes from the model file."""


# GGUF tokenizer.ggml.token_type values (llama.h `llama_token_type`).
_TYPE_NORMAL, _TYPE_UNKNOWN, _TYPE_CONTROL, _TYPE_USER_DEFINED = 1, 2, 3, 4
_TYPE_UNUSED, _TYPE_BYTE = 5, 6

# llama.h `llama_token_attr` bits.
_ATTR_UNKNOWN = 1 << 0
_ATTR_UNUSED = 1 << 1
_ATTR_NORMAL = 1 << 2
_ATTR_CONTROL = 1 << 3
_ATTR_USER_DEFINED = 1 << 4
_ATTR_BYTE = 1 << 5
_ATTR_LSTRIP = 1 << 7
_ATTR_RSTRIP = 1 << 8
_ATTR_SPECIAL = _ATTR_UNKNOWN | _ATTR_CONTROL  # hidden unless rendering special tokens

_TYPE_TO_ATTR = {
    _TYPE_NORMAL: _ATTR_NORMAL,
    _TYPE_UNKNOWN: _ATTR_UNKNOWN,
    _TYPE_CONTROL: _ATTR_CONTROL,
    _TYPE_USER_DEFINED: _ATTR_USER_DEFINED,
    _TYPE_UNUSED: _ATTR_UNUSED,
    _TYPE_BYTE: _ATTR_BYTE,
}

_SPM_SPACE = "\u2581"  # '▁'
_C_SPACE = " \t\n\v\f\r"  # C isspace(), which llama.cpp uses for lstrip/rstrip

# --- pre-tokenizer regexes (llama-vocab.cpp `llm_tokenizer_bpe`) --------------------------
# Each list is applied in order; every regex splits the current pieces into matches and the
# gaps between them (HF `Split(..., "isolated")`). The (?i:...) groups are spelled with ASCII
# classes as llama.cpp does, so Unicode case folding cannot widen them.
_RE_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_RE_CONTRACTIONS = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
_RE_LLAMA3 = (
    _RE_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_RE_QWEN2 = (
    _RE_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@dataclass(frozen=True)
class _PreSpec:
    regexes: tuple[str, ...]
    clean_spaces: bool = True
    ignore_merges: bool = False
    add_bos: bool = False


_PRE_DEFAULT = _PreSpec((r"[\p{P}\$\+<=>\^~\|]+", _RE_GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"))
_PRE_LLAMA3 = _PreSpec((_RE_LLAMA3,), ignore_merges=True, add_bos=True)
_PRE_QWEN2 = _PreSpec((_RE_QWEN2,), clean_spaces=False)
_PRE_STARCODER = _PreSpec((r"\p{N}", _RE_GPT2))
_PRE_GPT2 = _PreSpec((_RE_GPT2,))

# tokenizer.ggml.pre -> settings, as llama_vocab::impl::load maps them (only the pre-tokenizers
# whose regexes HF's Oniguruma engine runs exactly like llama.cpp).
_PRE_SPECS: dict[str, _PreSpec] = {
    "default": _PRE_DEFAULT,
    **dict.fromkeys(
        "llama3 llama-v3 llama-bpe falcon3 falcon-h1 pixtral midm-2.0 lfm2 jina-v5-nano".split(),
        _PRE_LLAMA3,
    ),
    **dict.fromkeys(("dbrx", "smaug-bpe"), _PreSpec((_RE_LLAMA3,))),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2"), _PRE_QWEN2),
    **dict.fromkeys(("megrez", "stablelm2"), _PreSpec((_RE_QWEN2,))),
    **dict.fromkeys(
        ("starcoder", "refact", "codeshell", "exaone", "minerva-7b", "mellum2"), _PRE_STARCODER
    ),
    **dict.fromkeys(("smollm", "command-r"), _PreSpec((r"\p{N}", _RE_GPT2), clean_spaces=False)),
    **dict.fromkeys("gpt-2 phi-2 gigachat a.x-4.0 mellum mpt olmo jais exaone4".split(), _PRE_GPT2),
    **dict.fromkeys(("trillion", "granite-docling"), _PreSpec((_RE_GPT2,), clean_spaces=False)),
}

# Token texts llama.cpp recognises by name (llama_vocab::impl::load). Where it takes "the first"
# match it walks an unordered_map; we take the first in these lists instead (deterministic).
_EOT_TEXTS = tuple(
    "<|eot_id|> <|im_end|> <|end|> <end_of_turn> <|endoftext|> <|end_of_text|> <EOT> _<EOT> "
    "[EOT] <｜end▁of▁sentence｜> <end_of_utterance>".split()
)
_EOM_TEXTS = ("<|eom_id|>",)
_FIM_TEXTS = {
    f"tokenizer.ggml.fim_{k}_token_id": tuple(v.split())
    for k, v in {
        "pre": "<|fim_prefix|> <fim-prefix> <fim_prefix> <｜fim▁begin｜> <PRE> ▁<PRE> "
        "<|code_prefix|> <|prefix|>",
        "suf": "<|fim_suffix|> <fim-suffix> <fim_suffix> <｜fim▁hole｜> <SUF> ▁<SUF> "
        "<|code_suffix|> <|suffix|>",
        "mid": "<|fim_middle|> <fim-middle> <fim_middle> <｜fim▁end｜> <MID> ▁<MID> "
        "<|code_middle|> <|middle|>",
        "pad": "<|fim_pad|> <fim-pad> <fim_pad> <PAD> [PAD]",
        "rep": "<|fim_repo|> <|repo_name|> <fim-repo> <REPO> <reponame>",
        "sep": "<|file_sep|>",
    }.items()
}
# Deprecated spellings llama.cpp still reads into the FIM ids.
_FIM_OLD_KEYS = {
    f"tokenizer.ggml.fim_{k}_token_id": f"tokenizer.ggml.{old}_token_id"
    for k, old in (("pre", "prefix"), ("suf", "suffix"), ("mid", "middle"))
}
_EOG_TEXTS = frozenset(
    "<|eot_id|> <|im_end|> <|end|> <|return|> <|call|> <|flush|> <|calls|> <end_of_turn> "
    "<|endoftext|> </s> <|eom_id|> <EOT> _<EOT> [EOT] [EOS] <|end_of_text|> <end_of_utterance> "
    "<eos> <turn|> <|tool_response> <｜end▁of▁sentence｜> [e~[".split()
)
_ALWAYS_RENDERED = ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>")  # gpt-oss


# --- byte-level BPE alphabet (GPT-2 bytes_to_unicode, llama.cpp unicode_byte_to_utf8) -----
def _gpt2_byte_decoder() -> dict[str, int]:
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + extra)] = b
            extra += 1
    return table


_GPT2_BYTES = _gpt2_byte_decoder()


def _gpt2_piece(text: str) -> bytes:
    """llama_decode_text: map each byte-level char back to its byte."""
    out = bytearray()
    for ch in text:
        b = _GPT2_BYTES.get(ch)
        if b is None:  # llama.cpp writes a marker (and, oddly, the whole token text)
            out += b"[UNK_BYTE_0x" + ch.encode().hex().encode() + text.encode() + b"]"
        else:
            out.append(b)
    return bytes(out)


# --- llama_detokenize clean_spaces (three passes over the bytes) --------------------------
_CLEAN_PUNCT = re.compile(rb" (?=[?!.,])")  # " ?" " !" " ." " ," -> drop the space
_CLEAN_QUOTE = re.compile(rb" ' ")  # a lone apostrophe between spaces -> "'"
_CLEAN_CONTRACTION = re.compile(rb" '(?=s|m|re|ve)")  # " 's" " 'm" " 're" " 've"


def _clean_spaces(raw: bytes) -> bytes:
    raw = _CLEAN_PUNCT.sub(b"", raw)
    raw = _CLEAN_QUOTE.sub(b"'", raw)
    return _CLEAN_CONTRACTION.sub(b"'", raw)


def _clean_cut(raw: bytes) -> int:
    """Largest k such that _clean_spaces(raw[:k]) is final whatever follows.

    Every rewrite involves a space or an apostrophe and looks at most two bytes past the
    apostrophe, so a cut is safe after a byte that is neither, with no apostrophe among the
    last three bytes.
    """
    k = len(raw)
    while k > 0 and (raw[k - 1] == 0x20 or 0x27 in raw[max(0, k - 3) : k]):
        k -= 1
    return k


def _radix_regex(words: Iterable[str]) -> str:
    """A regex for the longest of ``words`` (distinct, non-empty) matching at a position.

    Shared prefixes are factored out (a radix trie), so matching walks the text once instead
    of trying every word; optional tails are greedy, so longer words win.
    """
    groups: dict[str, list[str]] = {}
    for w in words:
        groups.setdefault(w[0], []).append(w)
    alts = []
    for group in groups.values():
        common = os.path.commonprefix(group)
        rest = [w[len(common) :] for w in group if len(w) > len(common)]
        alt = re.escape(common)
        if rest:
            alt += f"(?:{_radix_regex(rest)})" + ("?" if len(rest) < len(group) else "")
        alts.append(alt)
    return "|".join(alts)


# --- metadata helpers ---------------------------------------------------------------------
def _get_list(meta: Mapping[str, Any], key: str, n: int | None = None) -> list[Any] | None:
    value = meta.get(key)
    if value is None:
        return None
    if isinstance(value, (str, bytes)):
        raise TokenizerError(f"{key} must be an array, got {type(value).__name__}")
    try:
        value = list(value)
    except TypeError:
        raise TokenizerError(f"{key} must be an array, got {type(value).__name__}") from None
    if n is not None and len(value) < n:
        raise TokenizerError(f"{key} has {len(value)} entries, fewer than the {n} tokens")
    return value


def _get_id(meta: Mapping[str, Any], key: str) -> int | None:
    value = meta.get(key)
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise TokenizerError(f"{key} must be an integer, got {value!r}") from None


class Tokenizer:
    """A GGUF vocabulary whose encode/decode match llama.cpp's llama_tokenize/llama_detokenize."""

    vocab_size: int
    bos_id: int | None
    eos_id: int | None
    eot_id: int | None
    eom_id: int | None
    unk_id: int | None
    pad_id: int | None
    sep_id: int | None
    add_bos: bool
    add_sep: bool
    add_eos: bool
    add_space_prefix: bool
    model: str
    pre: str
    _texts: list[str]  # [vocab_size] token text ("[EMPTY_i]" for empty ones, as llama.cpp)
    _token_to_id: dict[str, int]
    _attrs: list[int]  # [vocab_size] llama_token_attr bits
    _eog: set[int]
    _clean: bool  # llama_detokenize's clean_spaces
    _pieces: dict[int, bytes]  # token_bytes cache
    _hf: HFTokenizer
    _missing_id: int | None  # HF id standing for characters missing from a BPE vocabulary

    def __init__(self, meta: Mapping[str, Any]) -> None:
        """Build from GGUF metadata: key -> python value (arrays as lists)."""
        self._load(meta)

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any]) -> Tokenizer:
        """Build from GGUF metadata: key -> python value (arrays as lists)."""
        return cls(meta)

    # --- loading ----------------------------------------------------------------------
    def _load(self, meta: Mapping[str, Any]) -> None:
        model = meta.get("tokenizer.ggml.model")
        if model not in ("gpt2", "llama", "bert"):
            raise TokenizerError(
                f"unsupported tokenizer.ggml.model {model!r} (supported: 'gpt2', 'llama', 'bert')"
            )
        self.model = model
        tokens = _get_list(meta, "tokenizer.ggml.tokens")
        if not tokens:
            raise TokenizerError("tokenizer.ggml.tokens is missing or empty")
        n = len(tokens)
        if set(map(type, tokens)) != {str}:
            raise TokenizerError("tokenizer.ggml.tokens must be an array of strings")
        texts = list(tokens)
        if "" in tokens:  # llama.cpp renames empty tokens so every text is non-empty
            texts = [t or f"[EMPTY_{i}]" for i, t in enumerate(texts)]
        token_to_id = dict(zip(texts, range(n)))
        if len(token_to_id) != n:
            dup = next(t for i, t in enumerate(texts) if token_to_id[t] != i)
            raise TokenizerError(f"tokenizer.ggml.tokens has a duplicate token {dup!r}")
        self.vocab_size = n
        self._texts = texts
        self._token_to_id = token_to_id

        types = _get_list(meta, "tokenizer.ggml.token_type", n)
        if types is None:
            attrs = [_ATTR_NORMAL] * n
        else:
            attrs = list(map(_TYPE_TO_ATTR.get, map(int, types[:n]), repeat(0)))

        is_spm = model == "llama"
        sep = None
        if is_spm:
            self.pre = "default"
            spec = _PreSpec((), clean_spaces=False, add_bos=True)
            add_space_prefix = True
            bos, eos, unk = 1, 2, 0
        elif model == "bert":
            self.pre = "default"
            spec = _PreSpec((), add_bos=True)
            add_space_prefix = False
            bos, eos, unk, sep = 101, None, 100, 102
        else:
            pre = meta.get("tokenizer.ggml.pre") or "default"
            if pre not in _PRE_SPECS:
                raise TokenizerError(
                    f"unsupported tokenizer.ggml.pre {pre!r} for tokenizer.ggml.model 'gpt2' "
                    f"(supported: {', '.join(sorted(_PRE_SPECS))})"
                )
            spec = _PRE_SPECS[pre]
            self.pre = pre
            add_space_prefix = False
            bos, eos, unk = 11, 11, None
        self._clean = spec.clean_spaces
        self.add_space_prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", add_space_prefix))

        def special(key: str, default: int | None) -> int | None:
            if default is not None and default >= n:
                default = None
            value = _get_id(meta, key)
            return value if value is not None and 0 <= value < n else default

        self.bos_id = special("tokenizer.ggml.bos_token_id", bos)
        self.eos_id = special("tokenizer.ggml.eos_token_id", eos)
        self.unk_id = special("tokenizer.ggml.unknown_token_id", unk)
        self.pad_id = special("tokenizer.ggml.padding_token_id", 0 if model == "bert" else None)
        # llama.cpp's spelling of the key
        self.sep_id = special("tokenizer.ggml.seperator_token_id", sep)
        self.eot_id = special("tokenizer.ggml.eot_token_id", None)
        self.eom_id = special("tokenizer.ggml.eom_token_id", None)
        fim = {k: special(k, None) for k in _FIM_TEXTS}
        for key, old in _FIM_OLD_KEYS.items():
            fim[key] = special(old, fim[key])
        self.add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", spec.add_bos))
        self.add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False))
        # add_sep: where a reranker's query and document meet (only WordPiece adds it in encode)
        add_sep = bool(meta.get("tokenizer.ggml.add_sep_token", model == "bert"))
        self.add_sep = add_sep and self.sep_id is not None
        if model == "bert":  # llama.cpp's WordPiece adds [CLS] and [SEP] whatever the flags say
            self.add_bos, self.add_eos = True, False
            for name, tid in (("unknown", self.unk_id), ("seperator", self.sep_id)):
                if tid is None:
                    raise TokenizerError(
                        f"tokenizer.ggml.{name}_token_id is missing (required for 'bert')"
                    )
        if self.add_bos and self.bos_id is None:
            raise TokenizerError("tokenizer.ggml.add_bos_token is set but there is no BOS token")
        if self.add_eos and self.eos_id is None:
            raise TokenizerError("tokenizer.ggml.add_eos_token is set but there is no EOS token")

        self._eog = self._mark_special_tokens(attrs, fim)
        self._mark_strip(attrs, str(meta.get("general.name", "")).lower())
        self._attrs = attrs
        self._pieces: dict[int, bytes] = {}

        self._missing_id = None
        if is_spm:
            hf = self._build_spm(meta)
        elif model == "bert":
            hf = self._build_wpm(meta)
        else:
            hf = self._build_bpe(meta, spec)
        self._add_special_tokens(hf)
        # special texts are split out here (see _partition), so the HF tokenizer must not
        # split control tokens again; user-defined ones never reach it
        hf.encode_special_tokens = True
        self._hf = hf
        self._build_special_scanner()

    @staticmethod
    def _with_attr(attrs: list[int], mask: int) -> list[int]:
        """Ids whose attributes intersect ``mask``."""
        return list(compress(range(len(attrs)), map(mask.__and__, attrs)))

    def _mark_special_tokens(self, attrs: list[int], fim: dict[str, int | None]) -> set[int]:
        """Find EOT/EOM/FIM/EOG tokens by text and fix their attributes, as llama.cpp does."""
        lookup = self._token_to_id

        def find(texts: Sequence[str]) -> int | None:
            for text in texts:
                tid = lookup.get(text)
                if tid is not None:
                    attrs[tid] |= _ATTR_CONTROL
                    return tid
            return None

        if self.eot_id is None:
            self.eot_id = find(_EOT_TEXTS)
        if self.eom_id is None:
            self.eom_id = find(_EOM_TEXTS)
        for key, texts in _FIM_TEXTS.items():
            if fim[key] is None:
                fim[key] = find(texts)

        for i in self._with_attr(attrs, _ATTR_CONTROL):  # control tokens named "unused"
            if "unused" in self._texts[i]:
                attrs[i] |= _ATTR_UNUSED

        eog = {
            t
            for t in (
                fim["tokenizer.ggml.fim_pad_token_id"],
                fim["tokenizer.ggml.fim_rep_token_id"],
                fim["tokenizer.ggml.fim_sep_token_id"],
            )
            if t is not None
        }
        for text in _EOG_TEXTS:
            tid = lookup.get(text)
            if tid is not None:
                eog.add(tid)
                attrs[tid] |= _ATTR_CONTROL
        for text in _ALWAYS_RENDERED:
            tid = lookup.get(text)
            if tid is not None:
                attrs[tid] = _ATTR_USER_DEFINED
        eog.update(t for t in (self.eos_id, self.eot_id, self.eom_id) if t is not None)

        # o200k_harmony / solar-open: "<|end|>" ends a message, not the generation
        eog_texts = {self._texts[t] for t in eog}
        has_call = bool(eog_texts & {"<|call|>", "<|calls|>"})
        if "<|end|>" in eog_texts and has_call and eog_texts & {"<|return|>", "<|flush|>"}:
            end = lookup["<|end|>"]
            eog.discard(end)
            attrs[end] = _ATTR_USER_DEFINED
        # gemma4 / plamo: "</s>" is an ordinary token there
        s_id = lookup.get("</s>")
        if s_id in eog and eog_texts & {"<|tool_response>", "<|plamo:eos|>"}:
            eog.discard(s_id)
            attrs[s_id] = _ATTR_NORMAL
        return eog

    def _mark_strip(self, attrs: list[int], name: str) -> None:
        """Per-model lstrip/rstrip attributes llama.cpp sets by model name (phi-3)."""
        if "phi-3" not in name and "phi3" not in name:
            return
        for i in self._with_attr(attrs, _ATTR_CONTROL | _ATTR_USER_DEFINED | _ATTR_UNKNOWN):
            attrs[i] |= _ATTR_RSTRIP
        for text, on in (
            ("</s>", True),
            ("<unk>", False),
            ("<s>", False),
            ("<|endoftext|>", False),
        ):
            tid = self._token_to_id.get(text)
            if tid is not None:
                attrs[tid] = attrs[tid] | _ATTR_RSTRIP if on else attrs[tid] & ~_ATTR_RSTRIP

    def _build_bpe(self, meta: Mapping[str, Any], spec: _PreSpec) -> HFTokenizer:
        raw_merges = _get_list(meta, "tokenizer.ggml.merges")
        if raw_merges is None:
            raise TokenizerError("tokenizer.ggml.merges is missing (required for 'gpt2')")
        vocab = self._token_to_id
        merges: dict[tuple[str, str], None] = {}  # ordered; the first rank of a pair wins
        for m in raw_merges:
            pos = m.find(" ", 1)
            if pos < 0:
                continue
            a, b = m[:pos], m[pos + 1 :]
            # HF rejects merges whose parts or result are not tokens; llama.cpp never uses them
            if a in vocab and b in vocab and a + b in vocab and (a, b) not in merges:
                merges[(a, b)] = None
        # A character missing from the vocabulary stays a symbol in llama.cpp: it blocks merges
        # across it and is dropped from the output. HF drops it before merging unless it maps
        # to an unk token, so map it to an extra id (vocab_size) that encode() filters out.
        missing = "<|rllm:missing|>"
        while missing in vocab:
            missing += "|"
        self._missing_id = self.vocab_size
        bpe = models.BPE(
            vocab={**vocab, missing: self._missing_id},
            merges=list(merges),
            unk_token=missing,
            ignore_merges=spec.ignore_merges,
        )
        hf = HFTokenizer(bpe)
        hf.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in spec.regexes]
            + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
        )
        hf.decoder = decoders.ByteLevel()
        return hf

    def _build_spm(self, meta: Mapping[str, Any]) -> HFTokenizer:
        texts = self._texts
        vocab = self._token_to_id
        scores = _get_list(meta, "tokenizer.ggml.scores", self.vocab_size)
        if scores is None:
            scores = [0.0] * self.vocab_size
        # llama.cpp merges the adjacent pair whose concatenation is the best-scoring token; any
        # split of a token into two tokens is such a pair. Rank = order of descending score.
        order = sorted(range(self.vocab_size), key=lambda i: -scores[i])
        merges = _rllm.spm_merges([texts[i] for i in order])
        bpe = models.BPE(vocab=vocab, merges=merges, byte_fallback=True, fuse_unk=False)
        hf = HFTokenizer(bpe)
        steps: list[normalizers.Normalizer] = []
        if self.add_space_prefix:  # llama.cpp prefixes every text fragment, as HF does
            steps.append(normalizers.Prepend(_SPM_SPACE))
        steps.append(normalizers.Replace(" ", _SPM_SPACE))
        hf.normalizer = normalizers.Sequence(steps)
        steps_d: list[decoders.Decoder] = [
            decoders.Replace(_SPM_SPACE, " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
        ]
        if self.add_space_prefix:
            steps_d.append(decoders.Strip(" ", 1, 0))
        hf.decoder = decoders.Sequence(steps_d)
        return hf

    def _build_wpm(self, meta: Mapping[str, Any]) -> HFTokenizer:
        # llama.cpp lowercases and strips accents unless the file says otherwise
        lowercase = bool(meta.get("tokenizer.ggml.normalizer.lowercase", True))
        strip_accents = bool(meta.get("tokenizer.ggml.normalizer.strip_accents", lowercase))
        # Word-initial tokens carry the "▁" that every word gets; continuations are bare, so
        # the continuation prefix is empty and the GGUF texts are the vocabulary as they are.
        wordpiece = models.WordPiece(
            vocab=self._token_to_id,
            unk_token=self._texts[self.unk_id],  # type: ignore[index]  # checked at load
            continuing_subword_prefix="",
            max_input_chars_per_word=1 << 30,
        )
        hf = HFTokenizer(wordpiece)
        hf.normalizer = normalizers.BertNormalizer(
            clean_text=True,
            handle_chinese_chars=True,
            strip_accents=strip_accents,
            lowercase=lowercase,
        )
        hf.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.BertPreTokenizer(),
                pre_tokenizers.Metaspace(replacement=_SPM_SPACE, prepend_scheme="always"),
            ]
        )
        return hf

    def _build_special_scanner(self) -> None:
        """A regex for the leftmost-longest special texts (a radix trie: one linear pass)."""
        mask = _ATTR_CONTROL | _ATTR_USER_DEFINED | _ATTR_UNKNOWN
        special = {self._texts[i]: i for i in self._with_attr(self._attrs, mask)}
        self._special_ids = special
        self._special_sorted = sorted(special)
        self._special_blen = {i: len(t.encode()) for t, i in special.items()}
        self._overlaps: dict[str, tuple[list[int], list[str]]] = {}
        self._special_re = re.compile(_radix_regex(special)) if special else None

    def _add_special_tokens(self, hf: HFTokenizer) -> None:
        """Control/unknown tokens -> special added tokens; user-defined -> plain added tokens,
        for users of ``hf_tokenizer`` (``encode`` splits them out itself, see _partition)."""
        attrs = self._attrs
        added = [
            AddedToken(
                self._texts[i],
                special=bool(attrs[i] & _ATTR_SPECIAL),
                normalized=False,
                lstrip=bool(attrs[i] & _ATTR_LSTRIP),
                rstrip=bool(attrs[i] & _ATTR_RSTRIP),
            )
            for i in self._with_attr(attrs, _ATTR_CONTROL | _ATTR_USER_DEFINED | _ATTR_UNKNOWN)
        ]
        if added:
            hf.add_tokens(added)

    # --- public API ---------------------------------------------------------------------
    @property
    def hf_tokenizer(self) -> HFTokenizer:
        """The underlying ``tokenizers.Tokenizer``. It adds no BOS/EOS, and its
        ``encode_special_tokens`` is on (control text is not parsed). Its ids equal
        ``encode``'s unless special texts overlap, lstrip/rstrip meet non-ASCII spaces, or a
        BPE text has characters missing from the vocabulary (id ``vocab_size`` there)."""
        return self._hf

    def encode(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids for ``text``, as ``llama_tokenize(add_special, parse_special)``."""
        ids: list[int] = []
        if add_special and self.add_bos:
            ids.append(self.bos_id)  # type: ignore[arg-type]  # checked at load
        for part in self._partition(text, parse_special) if text else ():
            if isinstance(part, int):
                ids.append(part)
            else:
                part_ids = self._hf.encode(part, add_special_tokens=False).ids
                if self._missing_id in part_ids:
                    part_ids = [i for i in part_ids if i != self._missing_id]
                ids += part_ids
        if add_special and self.add_eos:
            ids.append(self.eos_id)  # type: ignore[arg-type]
        if add_special and self.model == "bert":
            ids.append(self.sep_id)  # type: ignore[arg-type]  # checked at load
        return ids

    def _partition(self, text: str, parse_special: bool) -> list[str | int]:
        """Split out special-token texts exactly as llama.cpp's tokenizer_st_partition does.

        Tokens are tried longest first (UTF-8 length), each over every remaining text piece,
        honouring lstrip/rstrip (C isspace). Only tokens occurring in ``text`` are tried.
        """
        found = self._special_in(text, parse_special)
        if not found:
            return [text]
        blen = self._special_blen
        parts: list[str | int] = [text]
        for tid in sorted(found, key=lambda t: (-blen[t], t)):
            needle, attr = self._texts[tid], self._attrs[tid]
            out: list[str | int] = []
            for part in parts:
                if isinstance(part, int) or needle not in part:
                    out.append(part)
                    continue
                pos, end = 0, len(part)
                while (match := part.find(needle, pos)) >= 0:
                    left = match
                    if attr & _ATTR_LSTRIP:
                        while left > pos and part[left - 1] in _C_SPACE:
                            left -= 1
                    if left > pos:
                        out.append(part[pos:left])
                    out.append(tid)
                    pos = match + len(needle)
                    if attr & _ATTR_RSTRIP:
                        while pos < end and part[pos] in _C_SPACE:
                            pos += 1
                if pos < end:
                    out.append(part[pos:])
            parts = out
        return parts

    def _special_in(self, text: str, parse_special: bool) -> set[int]:
        """Ids of the special tokens (control only if ``parse_special``) occurring in text.

        One regex pass finds the leftmost-longest special texts without overlap. Any other
        occurrence starts inside one of those matches, so it is a substring of the match or
        runs past its end; both kinds are precomputed per matched text.
        """
        if self._special_re is None:
            return set()
        found: set[int] = set()
        maybe: set[str] = set()
        for match in set(self._special_re.findall(text)):
            inside, across = self._overlaps.get(match) or self._overlap_info(match)
            found.update(inside)
            maybe.update(across)
        ids = self._special_ids
        found.update(ids[t] for t in maybe if ids[t] not in found and t in text)
        if not parse_special:
            found = {t for t in found if not self._attrs[t] & _ATTR_SPECIAL}
        return found

    def _overlap_info(self, match: str) -> tuple[list[int], list[str]]:
        """(ids of special texts inside ``match``, special texts starting inside it and
        ending after it); memoized."""
        ids, texts = self._special_ids, self._special_sorted
        n = len(match)
        inside = [
            ids[match[i:j]] for i in range(n) for j in range(i + 1, n + 1) if match[i:j] in ids
        ]
        across = []
        for i in range(1, n):
            suffix = match[i:]
            k = bisect_left(texts, suffix)
            while k < len(texts) and texts[k].startswith(suffix):
                if len(texts[k]) > len(suffix):
                    across.append(texts[k])
                k += 1
        self._overlaps[match] = (inside, across)
        return inside, across

    def token_bytes(self, id: int) -> bytes:
        """Bytes ``id`` contributes to text (``llama_token_to_piece`` with special=True)."""
        piece = self._pieces.get(id)
        if piece is None:
            piece = self._pieces[id] = self._make_piece(self._check(id))
        return piece

    def _check(self, id: int) -> int:
        if not 0 <= id < self.vocab_size:
            raise ValueError(f"token id {id} out of range [0, {self.vocab_size})")
        return id

    def _make_piece(self, id: int) -> bytes:
        attr, text = self._attrs[id], self._texts[id]
        if attr & (_ATTR_SPECIAL | _ATTR_USER_DEFINED):
            return text.encode()
        if attr & _ATTR_NORMAL:
            if self.model in ("llama", "bert"):
                return text.replace(_SPM_SPACE, " ").encode()
            return _gpt2_piece(text)
        if attr & _ATTR_BYTE:  # "<0xXX>"; llama.cpp: strtol(text.substr(3, 2), 16)
            digits = re.match(r"[0-9A-Fa-f]*", text[3:5])
            return bytes([int(digits[0], 16) if digits and digits[0] else 0])
        return b""  # unused / undefined tokens render as nothing

    def _piece(self, id: int, special: bool) -> bytes:
        if not special and self._attrs[self._check(id)] & _ATTR_SPECIAL:
            return b""
        return self.token_bytes(id)

    def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
        """Text for ``ids``, as ``llama_detokenize(remove_special=skip_special,
        unparse_special=not skip_special)``; invalid UTF-8 becomes U+FFFD."""
        return self.decode_bytes(ids, skip_special).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: Sequence[int], skip_special: bool = False) -> bytes:
        """Like :meth:`decode` but returns the raw bytes."""
        ids = list(ids)
        strip_first = self.add_space_prefix
        if skip_special:
            if self.add_bos and ids and ids[0] == self.bos_id:
                strip_first = False
                ids = ids[1:]
            if self.add_eos and ids and ids[-1] == self.eos_id:
                ids = ids[:-1]
        parts = [self._piece(i, not skip_special) for i in ids]
        if strip_first and parts and parts[0][:1] == b" ":
            parts[0] = parts[0][1:]
        raw = b"".join(parts)
        return _clean_spaces(raw) if self._clean else raw

    def is_eog(self, id: int) -> bool:
        """True for tokens that end generation (``llama_vocab_is_eog``)."""
        return id in self._eog

    @property
    def eog_ids(self) -> frozenset[int]:
        return frozenset(self._eog)

    def is_control(self, id: int) -> bool:
        """True for tokens hidden from text unless special tokens are rendered."""
        return bool(self._attrs[self._check(id)] & _ATTR_SPECIAL)

    def __repr__(self) -> str:
        return (
            f"Tokenizer(model={self.model!r}, pre={self.pre!r}, vocab_size={self.vocab_size}, "
            f"bos_id={self.bos_id}, eos_id={self.eos_id}, add_bos={self.add_bos})"
        )


class Detokenizer:
    """Incremental decoding: push ids one at a time, get only complete UTF-8 text back.

    The pieces concatenate to ``tok.decode(ids, skip_special)``. Bytes of a character split
    across tokens are held back, and so are trailing spaces/apostrophes while llama.cpp's
    clean_spaces rules could still rewrite them. With skip_special, a trailing EOS is not
    removed as decode() removes it (only matters if EOS is not a control token).
    """

    def __init__(self, tok: Tokenizer, skip_special: bool = False) -> None:
        self._tok = tok
        self._skip = skip_special
        self.reset()

    def reset(self) -> None:
        self._first = True
        self._pending = b""
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, id: int) -> str:
        tok = self._tok
        piece = tok._piece(id, not self._skip)
        if self._first:
            self._first = False
            if self._skip and tok.add_bos and id == tok.bos_id:
                return ""
            if tok.add_space_prefix and piece[:1] == b" ":
                piece = piece[1:]
        if not tok._clean:
            return self._utf8.decode(piece)
        self._pending += piece
        k = _clean_cut(self._pending)
        ready, self._pending = self._pending[:k], self._pending[k:]
        return self._utf8.decode(_clean_spaces(ready)) if ready else ""

    def flush(self) -> str:
        tail = _clean_spaces(self._pending) if self._tok._clean else b""
        text = self._utf8.decode(tail, final=True)
        self.reset()
        return text
