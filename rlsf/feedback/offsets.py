"""Certificates to token-level rewards, for the exact token ids that were sampled.

The checker judges the *text* of a completion; the update needs a reward per *token*. The text
and the character range of every token are both derived from the sampled ids by decoding
prefixes of those ids (never by re-tokenising the text, which may split differently):
token ``i`` covers the characters that ``decode(ids[:i+1])`` adds to ``decode(ids[:i])``.

A token holding only part of a multi-byte character adds no complete character; it is given
the range of the character it helps to complete, so a span over that character reaches every
token carrying its bytes. Special tokens (end of turn) cover no characters.

The ranges are computed in linear time by incremental detokenisation (as vLLM and TGI stream
text): each token's prefix decode is derived from a short window of ids after the last point
where the decoded text was a clean prefix of the whole, and the result is checked against the
one full decode; a tokenizer whose decodes do not add up that way falls back to decoding every
prefix (quadratic, the definition itself). :class:`Detokenizer` holds only what decoding needs
(for a fast tokenizer its Rust backend), so it pickles into worker processes that never import
``transformers`` or ``torch``.

Reward modes (``reward.mode``):

* ``sequence``: ``r[last] = score``, every other token 0 -- the scalar baseline.
* ``token`` (RLSF): ``r[last] = score`` plus, for every span, its reward on the tokens it covers.
  With ``spread_spans`` each of the ``n`` covered tokens gets ``reward / n`` (a span's total
  does not depend on tokenisation); otherwise each gets the full ``reward``.

``last`` is the final generated token (the end-of-turn token when one was sampled, else the
token where the length limit cut the completion). A span that covers no token -- empty, or
past the text -- gives its reward to the token at its position, or to the last token, so no
feedback is ever dropped.
"""

from __future__ import annotations

import random
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: worker processes decode without it
    pass

Offsets = list[tuple[int, int]]


DECODE_KW = dict(skip_special_tokens=True, clean_up_tokenization_spaces=False)

_FFFD = "\ufffd"  # what a decoder makes of bytes that do not (yet) form a character


class Detokenizer:
    """Decodes sampled ids into a completion's text and per-token character ranges.

    Made with :meth:`from_tokenizer`. For a standard fast ``transformers`` tokenizer it keeps
    only the Rust ``tokenizers.Tokenizer`` backend (whose ``decode(ids, skip_special_tokens=True)``
    is what the fast tokenizer's ``decode(ids, skip_special_tokens=True,
    clean_up_tokenization_spaces=False)`` returns) and the special ids, so it pickles cheaply and
    is used in processes that never import ``transformers`` or ``torch``. Any other tokenizer
    (a slow one, a class with its own ``decode``, a backend that decodes differently) is held
    as it is, and pickles as that object does.
    """

    def __init__(self, decoder, special_ids, *, backend: bool) -> None:
        self._decoder = decoder
        self._backend = bool(backend)
        self.all_special_ids = sorted({int(i) for i in special_ids})
        self._special = frozenset(self.all_special_ids)

    @classmethod
    def from_tokenizer(cls, tokenizer) -> Detokenizer:
        """A detokenizer for ``tokenizer`` (a ``transformers`` tokenizer, or any object with
        ``decode(ids, skip_special_tokens=..., clean_up_tokenization_spaces=...)``)."""
        if isinstance(tokenizer, Detokenizer):
            return tokenizer
        special = list(getattr(tokenizer, "all_special_ids", []) or [])
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None and _standard_fast_decode(tokenizer) and _backend_agrees(tokenizer, backend):
            return cls(backend, special, backend=True)
        return cls(tokenizer, special, backend=False)

    @property
    def uses_backend(self) -> bool:
        """Whether this holds the Rust backend alone (not the whole tokenizer object)."""
        return self._backend

    def decode(self, token_ids: Sequence[int], **kw) -> str:
        """``tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)``."""
        if any(DECODE_KW.get(k, not v) != v for k, v in kw.items()):
            raise ValueError(f"Detokenizer decodes only with {DECODE_KW}, got {kw}")
        ids = [int(t) for t in token_ids]
        if self._backend:
            return self._decoder.decode(ids, skip_special_tokens=True)
        return self._decoder.decode(ids, **DECODE_KW)

    def text(self, token_ids: Sequence[int]) -> str:
        """The completion text of these ids (= :func:`completion_text`)."""
        return self.decode(token_ids)

    def text_and_offsets(self, token_ids: Sequence[int]) -> tuple[str, Offsets]:
        """The text and each token's ``[start, end)`` range (= :func:`decode_with_offsets`)."""
        ids = [int(t) for t in token_ids]
        if self._backend:
            backend = self._decoder

            def dec(x: list[int]) -> str:
                return backend.decode(x, skip_special_tokens=True)
        else:
            dec = self.decode
        text = dec(ids)
        ends = _incremental_ends(dec, ids, text)
        if ends is None:  # the decodes do not add up window by window: decode every prefix
            return _decode_with_offsets_prefix(self, ids)
        return text, _offsets_from_ends(ids, ends, self._special)

    def __repr__(self) -> str:
        kind = "backend" if self._backend else type(self._decoder).__name__
        return f"Detokenizer({kind}, {len(self._special)} special ids)"


def _standard_fast_decode(tokenizer) -> bool:
    """Whether ``tokenizer.decode`` is the ``transformers`` fast-tokenizer decode (backend decode,
    then an optional clean-up), not a subclass's own."""
    cls = type(tokenizer)
    dec, _dec = getattr(cls, "decode", None), getattr(cls, "_decode", None)
    if dec is None or _dec is None:
        return False
    return (
        getattr(dec, "__qualname__", "") == "PreTrainedTokenizerBase.decode"
        and getattr(_dec, "__qualname__", "") in ("TokenizersBackend._decode", "PreTrainedTokenizerFast._decode")
        and getattr(_dec, "__module__", "").startswith("transformers.")
        and getattr(dec, "__module__", "").startswith("transformers.")
    )


def _backend_agrees(tokenizer, backend) -> bool:
    """Spot check that the backend decodes as the tokenizer does (ids of every kind)."""
    try:
        size = int(backend.get_vocab_size(with_added_tokens=True))
        special = list(getattr(tokenizer, "all_special_ids", []) or [])
        rng = random.Random(0)
        text = "Answer: (6 - 4) * (4 + 8) = 24\n\n  é ñ ü 😀 👩‍👩‍👧 中文字 \x00\t\ufffd ✓"
        words = list(backend.encode(text, add_special_tokens=False).ids)
        probes = [
            list(range(min(size, 64))),
            [rng.randrange(size) for _ in range(64)],
            words,
            words[:7] + special + words[7:] + special,
            special,
            [],
        ]
        return all(
            backend.decode(p, skip_special_tokens=True) == tokenizer.decode(p, **DECODE_KW) for p in probes
        )
    except Exception:  # noqa: BLE001 -- any doubt: keep the tokenizer itself
        return False


_DETOKENIZERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _detokenizer(tokenizer) -> Detokenizer:
    """The (cached) detokenizer of a tokenizer, or the detokenizer itself."""
    if isinstance(tokenizer, Detokenizer):
        return tokenizer
    key = tuple(getattr(tokenizer, "all_special_ids", []) or [])
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        key += (int(backend.get_vocab_size(with_added_tokens=True)),)
    try:
        hit = _DETOKENIZERS.get(tokenizer)
    except TypeError:  # not weak-referenceable or not hashable: no cache
        return Detokenizer.from_tokenizer(tokenizer)
    if hit is not None and hit[0] == key:
        return hit[1]
    detok = Detokenizer.from_tokenizer(tokenizer)
    _DETOKENIZERS[tokenizer] = (key, detok)
    return detok


def completion_text(tokenizer, token_ids: Sequence[int]) -> str:
    """The text a checker judges for these sampled ids (special tokens such as end of turn dropped).

    ``tokenizer`` is a ``transformers`` tokenizer or a :class:`Detokenizer`.
    """
    if isinstance(tokenizer, Detokenizer):
        return tokenizer.text(token_ids)
    return tokenizer.decode([int(t) for t in token_ids], **DECODE_KW)


def decode_with_offsets(tokenizer, token_ids: Sequence[int]) -> tuple[str, Offsets]:
    """Return the decoded text of ``token_ids`` and each token's ``[start, end)`` character range.

    ``tokenizer`` is a ``transformers`` tokenizer or a :class:`Detokenizer`. Linear in the
    length (a few decodes of a short window per token); exactly the ranges of the definition in
    the module docstring, which :func:`_decode_with_offsets_prefix` computes by brute force.
    """
    return _detokenizer(tokenizer).text_and_offsets(token_ids)


def _common_prefix(a: str, text: str, start: int) -> int:
    """Length of the longest common prefix of ``a`` and ``text[start:]``."""
    if text.startswith(a, start):
        return len(a)
    n = min(len(a), len(text) - start)
    k = 0
    while k < n and a[k] == text[start + k]:
        k += 1
    return k


def _incremental_ends(decode: Callable[[list[int]], str], ids: list[int], text: str) -> list[int] | None:
    """For every token ``i``, ``max over k <= i`` of the common prefix of ``decode(ids[:k+1])``
    and ``text`` -- what the prefix method computes -- in O(n * window); ``None`` when this
    tokenizer's decodes do not add up window by window (the caller then decodes every prefix).

    ``decode(ids[:i+1])`` is taken to be ``text[:T] + tail``, where ``T`` characters were decoded
    up to the last *anchor* ``p`` (a token after which the decoded text was a clean prefix of the
    text: non-empty new text not ending in U+FFFD, so no character is pending), and ``tail`` is
    what ``decode(ids[q:i+1])`` adds to ``decode(ids[q:p])`` with ``q`` the anchor before ``p``
    (context, for decoders that treat a leading token specially). For a byte-level decoder
    (lossy UTF-8 of the tokens' bytes) this is exact: an anchor is a character boundary of the
    whole byte string. Every anchor's text is checked against ``text``, and the last tail must
    complete it.
    """
    ends: list[int] = []
    q = p = 0  # context start and anchor (token indices)
    t = 0  # len(decode(ids[:p])), and decode(ids[:p]) == text[:t]
    base = ""  # decode(ids[q:p])
    prev = 0
    tail = ""
    for i in range(len(ids)):
        w = decode(ids[q : i + 1])
        if not w.startswith(base):
            return None
        tail = w[len(base) :]
        if tail and not tail.endswith(_FFFD):
            if not text.startswith(tail, t):
                return None
            t += len(tail)
            j = t
            q, p = p, i + 1
            base = decode(ids[q:p])
            tail = ""
        else:
            j = t + _common_prefix(tail, text, t)
        prev = max(prev, j)
        ends.append(prev)
    if t + len(tail) != len(text) or not text.endswith(tail):
        return None  # the pieces do not add up to the whole text
    return ends


def _offsets_from_ends(ids: list[int], ends: list[int], special: frozenset[int] | set[int]) -> Offsets:
    """Ranges from cumulative ends; tokens carrying part of a multi-byte character get that
    character's range (the same rule as :func:`_decode_with_offsets_prefix`, in one pass)."""
    offsets: Offsets = []
    start = 0
    for end in ends:
        offsets.append((start, end))
        start = end
    nxt: tuple[int, int] | None = None  # the first non-empty range after i
    for i in range(len(offsets) - 1, -1, -1):
        s, e = offsets[i]
        if s == e and ids[i] not in special and nxt is not None and nxt[0] == s:
            offsets[i] = (s, nxt[1])
        if offsets[i][1] > offsets[i][0]:
            nxt = offsets[i]
    return offsets


def _decode_with_offsets_prefix(tokenizer, token_ids: Sequence[int]) -> tuple[str, Offsets]:
    """Reference and fallback: the definition itself, one decode per prefix (quadratic).

    Exact for any tokenizer whose decode of a prefix is a prefix of the whole. ``tokenizer`` is
    a ``transformers`` tokenizer or a :class:`Detokenizer`.
    """
    ids = [int(t) for t in token_ids]
    kw = DECODE_KW
    text = completion_text(tokenizer, ids)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    ends: list[int] = []
    prev = 0
    for i in range(len(ids)):
        prefix = tokenizer.decode(ids[: i + 1], **kw)
        # Longest common prefix with the full text: a trailing partial character decodes to
        # U+FFFD and is not counted until the token that completes it.
        n = min(len(prefix), len(text))
        j = 0
        while j < n and prefix[j] == text[j]:
            j += 1
        prev = max(prev, j)
        ends.append(prev)
    offsets: Offsets = []
    start = 0
    for end in ends:
        offsets.append((start, end))
        start = end
    # Tokens carrying part of a multi-byte character: give them that character's range.
    for i in range(len(offsets) - 1, -1, -1):
        s, e = offsets[i]
        if s == e and ids[i] not in special:
            nxt = next((offsets[k] for k in range(i + 1, len(offsets)) if offsets[k][1] > offsets[k][0]), None)
            if nxt is not None and nxt[0] == s:
                offsets[i] = (s, nxt[1])
    return text, offsets


