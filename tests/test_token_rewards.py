"""Certificates to per-token rewards, on the real SmolLM2 tokenizer."""

import pytest
import torch

from rlsf.feedback import Certificate, Span
from rlsf.feedback.rewards import NO_ATTEMPT_REWARD, certificate_token_rewards, token_reward_tensor
from rlsf.feedback.offsets import decode_with_offsets


def ids_of(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def check_offsets(tokenizer, ids):
    text, offs = decode_with_offsets(tokenizer, ids)
    assert len(offs) == len(ids)
    # Ranges are monotone, inside the text, and every character is covered by some token.
    covered = set()
    for (s, e), (s2, _) in zip(offs, offs[1:] + [(len(text), len(text))]):
        assert 0 <= s <= e <= len(text) and s <= s2
        covered.update(range(s, e))
    assert covered == set(range(len(text)))
    return text, offs


def test_offsets_match_decoded_tokens(tokenizer):
    text = "4 + 8 = 12 (left: 4 6 12)\n6 - 4 = 2 (left: 2 12)\nAnswer: (6 - 4) * (4 + 8) = 24"
    ids = ids_of(tokenizer, text)
    out, offs = check_offsets(tokenizer, ids)
    assert out == text
    assert "".join(out[s:e] for s, e in offs) == text  # ASCII: a partition of the text
    for i, (s, e) in enumerate(offs):
        assert out[s:e] == tokenizer.decode([ids[i]])


def test_offsets_from_sampled_ids_not_retokenised(tokenizer):
    # "Answer" is one token when tokenised, but a model may sample "An" then "swer".
    split = ids_of(tokenizer, "An") + ids_of(tokenizer, "swer")
    assert ids_of(tokenizer, "Answer") != split
    ids = split + ids_of(tokenizer, ": 24")
    text, offs = check_offsets(tokenizer, ids)
    assert text == "Answer: 24"
    assert offs[:2] == [(0, 2), (2, 6)]


def test_multibyte_characters(tokenizer):
    text = "é 😀 中文 = 24 ✓"
    ids = ids_of(tokenizer, text)
    out, offs = check_offsets(tokenizer, ids)
    assert out == text
    emoji = text.index("😀")
    carriers = [i for i, (s, e) in enumerate(offs) if s <= emoji < e]
    # Every token carrying a byte of the emoji maps onto it, so a span over it reaches them all.
    raw = [tokenizer.convert_ids_to_tokens(i) for i in ids]
    assert len(carriers) >= 1
    r = certificate_token_rewards(Certificate(0.0, "x", spans=[Span(emoji, emoji + 1, -0.4)]), offs)
    assert all(r[i] < 0 for i in carriers), (raw, offs)
    assert sum(r) == pytest.approx(-0.4)


def test_span_starting_and_ending_inside_tokens(tokenizer):
    text = "12 + 12 = 24 (left: 24)"
    ids = ids_of(tokenizer, text)
    _, offs = decode_with_offsets(tokenizer, ids)
    span = Span(1, 6, -0.2)  # from inside "12" to inside the second "12"
    hit = [i for i, (s, e) in enumerate(offs) if s < 6 and e > 1]
    cert = Certificate(1.0, "x", spans=[span])  # a total above the squash (see test_reward_ordering)
    r = certificate_token_rewards(cert, offs)
    assert [i for i, v in enumerate(r[:-1]) if v != 0] == hit
    assert sum(r) == pytest.approx(1.0 - 0.2)  # spread: total independent of tokenisation
    r = certificate_token_rewards(cert, offs, spread_spans=False)
    assert len(hit) <= 5 and all(r[i] == pytest.approx(-0.2) for i in hit)


def test_score_on_last_token_and_sequence_mode(tokenizer):
    ids = ids_of(tokenizer, "1 + 1 = 2 (left: 2)") + [tokenizer.eos_token_id]
    text, offs = decode_with_offsets(tokenizer, ids)
    assert offs[-1][0] == offs[-1][1] == len(text)  # end of turn covers no character
    cert = Certificate(1.0, "correct", True, spans=[Span(0, 9, 0.2), Span(10, 19, -0.4)])
    seq = certificate_token_rewards(cert, offs, mode="sequence")
    assert seq[-1] == 1.0 and sum(abs(v) for v in seq[:-1]) == 0
    tok = certificate_token_rewards(cert, offs, mode="token")
    assert tok[-1] == 1.0
    assert sum(tok) == pytest.approx(1.0 + 0.2 - 0.4)
    assert certificate_token_rewards(cert, offs, mode="token", span_weight=0.0) == seq
    with pytest.raises(ValueError):
        certificate_token_rewards(cert, offs, mode="bogus")


def test_empty_and_truncated_completions(tokenizer):
    text, offs = decode_with_offsets(tokenizer, [])
    assert text == "" and offs == []
    assert certificate_token_rewards(Certificate(-1.0, "empty"), []) == []
    # Only an end-of-turn token: the score lands on it.
    text, offs = decode_with_offsets(tokenizer, [tokenizer.eos_token_id])
    assert text == "" and certificate_token_rewards(Certificate(-0.2, "x", spans=[Span(0, 0, -0.2)]), offs) == [-0.4]
    assert certificate_token_rewards(Certificate.no_attempt("empty", "no reply"), offs) == [NO_ATTEMPT_REWARD]
    # Cut at the length limit (no end of turn): the score goes on the last token sampled.
    ids = ids_of(tokenizer, "4 + 8 = 12 (left: 4 6")
    _, offs = decode_with_offsets(tokenizer, ids)
    r = certificate_token_rewards(Certificate(0.0, "no_answer", spans=[Span(0, 21, -1.0)]), offs, mode="sequence")
    assert r == [0.0] * (len(ids) - 1) + [0.0]
    r = certificate_token_rewards(Certificate(-0.3, "no_answer"), offs, mode="sequence")
    assert r[-1] == -0.3


def test_span_past_text_is_not_dropped(tokenizer):
    ids = ids_of(tokenizer, "abc")
    _, offs = decode_with_offsets(tokenizer, ids)
    r = certificate_token_rewards(Certificate(0.0, "x", spans=[Span(50, 60, -0.4)]), offs)
    assert sum(r) == pytest.approx(-0.4) and r[-1] == pytest.approx(-0.4)


def test_reward_tensor_alignment(tokenizer):
    a = ids_of(tokenizer, "1 + 2 = 3") + [tokenizer.eos_token_id]
    b = ids_of(tokenizer, "9")
    mask = torch.zeros(2, len(a), dtype=torch.long)
    mask[0, : len(a)] = 1
    mask[1, : len(b)] = 1
    offs = [decode_with_offsets(tokenizer, a)[1], decode_with_offsets(tokenizer, b)[1]]
    certs = [Certificate(1.0, "c", True), Certificate(-0.3, "w")]
    r = token_reward_tensor(certs, offs, mask, mode="sequence")
    assert r.shape == mask.shape
    assert r[0, len(a) - 1] == 1.0 and r[1, len(b) - 1] == pytest.approx(-0.3)
    assert r[1, len(b):].abs().sum() == 0
    with pytest.raises(ValueError, match="row 1"):
        token_reward_tensor(certs, [offs[0], offs[0]], mask)


# --- Linear-time offsets (incremental detokenisation) and the picklable Detokenizer -------------

import json  # noqa: E402
import pickle  # noqa: E402
import random  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from rlsf.feedback import offsets as tr  # noqa: E402
from rlsf.feedback.offsets import Detokenizer, completion_text  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MULTIBYTE = [
    "é 😀 中文 = 24 ✓",
    "naïve café, Ångström, Straße, ñandú",
    "日本語のテキストと한국어 그리고 中文字符",
    "👩‍👩‍👧 👍🏽 🇫🇷 x",
    "a\x00b\x00\x00c",
    "literal \ufffd replacement \ufffd\ufffd!",
    "tabs\tand\nnewlines\n\n  spaces   ",
    "4 + 8 = 12 (left: 4 6 12)\n6 - 4 = 2 (left: 2 12)\nAnswer: (6 - 4) * (4 + 8) = 24",
]


def byte_token_ids(tokenizer):
    """The id of each single-byte token of the byte-level vocabulary (None where it has none)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    chars = dict(zip(bs, map(chr, cs)))
    return [tokenizer.backend_tokenizer.token_to_id(chars[b]) for b in range(256)]


@pytest.fixture(scope="module")
def detok(tokenizer):
    d = Detokenizer.from_tokenizer(tokenizer)
    assert d.uses_backend  # SmolLM2's fast tokenizer: the Rust backend alone
    return d


def test_backend_decode_equals_tokenizer_decode(tokenizer, detok):
    rng = random.Random(7)
    vocab = len(tokenizer)
    special = [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_start|>", "<|im_end|>", "<|endoftext|>")]
    cases = [[rng.randrange(vocab) for _ in range(rng.randint(0, 120))] for _ in range(300)]
    cases += [list(range(0, 40)), special, []]
    for text in MULTIBYTE:
        ids = ids_of(tokenizer, text)
        cases += [ids, ids[:3] + special + ids[3:] + [special[1]], [special[0]] + ids[::-1]]
    for ids in cases:
        assert detok.text(ids) == tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        assert completion_text(detok, ids) == completion_text(tokenizer, ids)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_linear_offsets_equal_prefix_reference_random_ids(tokenizer, detok, seed):
    # 3 x 100 random sequences over the whole vocabulary (specials and partial bytes included):
    # many decode to U+FFFD, where the reference's character-by-character rule must be kept.
    rng = random.Random(seed)
    vocab = len(tokenizer)
    for _ in range(100):
        ids = [rng.randrange(vocab) for _ in range(rng.randint(1, 200))]
        assert detok.text_and_offsets(ids) == tr._decode_with_offsets_prefix(detok, ids), ids


def test_linear_offsets_equal_prefix_reference_special_and_multibyte(tokenizer, detok):
    rng = random.Random(3)
    specials = [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_start|>", "<|im_end|>", "<|endoftext|>")]
    specials += [3, 9, 16]  # skipped by decode, though not in all_special_ids
    byte_ids = byte_token_ids(tokenizer)
    cases = []
    for text in MULTIBYTE:
        ids = ids_of(tokenizer, text)
        cases.append(ids)
        for _ in range(6):  # special tokens in the middle
            k = list(ids)
            for _ in range(rng.randint(1, 3)):
                k.insert(rng.randint(0, len(k)), rng.choice(specials))
            cases.append(k)
        # One token per UTF-8 byte (the most a multi-byte character can be split), cut anywhere.
        raw = [byte_ids[b] for b in text.encode()]
        if None not in raw:
            cases += [raw[:cut] for cut in range(1, len(raw) + 1)]
            cases.append(raw[:5] + [specials[1]] + raw[5:])  # a special inside a character
        cases.append(ids + [specials[1]])  # end of turn
    assert len(cases) > 200
    for ids in cases:
        new = tr.decode_with_offsets(detok, ids)
        assert new == tr._decode_with_offsets_prefix(tokenizer, ids), ids  # the old function, on the HF tokenizer
        assert new == tr.decode_with_offsets(tokenizer, ids)


def test_detokenizer_pickles(tokenizer, detok):
    rng = random.Random(4)
    seqs = [[rng.randrange(len(tokenizer)) for _ in range(50)] for _ in range(20)]
    seqs += [ids_of(tokenizer, t) + [tokenizer.eos_token_id] for t in MULTIBYTE]
    copy = pickle.loads(pickle.dumps(detok))
    assert copy.uses_backend and copy.all_special_ids == detok.all_special_ids
    for ids in seqs:
        assert copy.text_and_offsets(ids) == detok.text_and_offsets(ids)
        assert copy.text(ids) == detok.text(ids)


def test_detokenizer_used_without_transformers_or_torch(tokenizer, detok, tmp_path):
    seqs = [ids_of(tokenizer, t) + [tokenizer.eos_token_id] for t in MULTIBYTE]
    seqs.append([random.Random(5).randrange(len(tokenizer)) for _ in range(150)])
    path = tmp_path / "detok.pkl"
    path.write_bytes(pickle.dumps((detok, seqs)))
    code = (
        "import json, pickle, sys\n"
        f"detok, seqs = pickle.loads(open({str(path)!r}, 'rb').read())\n"
        "out = [detok.text_and_offsets(ids) for ids in seqs]\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('transformers', 'torch'))\n"
        "print(json.dumps({'heavy': heavy, 'out': out}))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
    )
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["heavy"] == []
    assert [(t, [tuple(o) for o in offs]) for t, offs in got["out"]] == [detok.text_and_offsets(s) for s in seqs]


class FakeTokenizer:
    """A tiny tokenizer-like object: ``decode`` joins token strings, then post-processes the whole."""

    all_special_ids = [0]

    def __init__(self, pieces, post=lambda s: s):
        self.pieces, self.post = pieces, post

    def decode(self, ids, skip_special_tokens=True, clean_up_tokenization_spaces=False):
        return self.post("".join(self.pieces[i] for i in ids if not (skip_special_tokens and i == 0)))


def test_fallback_when_pieces_do_not_add_up(monkeypatch):
    pieces = ["<eos>", "a", " ", ".", "b", "cd", "ü"]
    # Clean-up style: " ." becomes "." once the "." arrives, so a prefix's text is not a prefix of the whole.
    odd = FakeTokenizer(pieces, post=lambda s: s.replace(" .", "."))
    calls = []
    reference = tr._decode_with_offsets_prefix
    monkeypatch.setattr(tr, "_decode_with_offsets_prefix", lambda tok, ids: calls.append(ids) or reference(tok, ids))
    for ids in ([1, 2, 3, 4], [1, 2, 2, 3, 5, 0], [2, 3, 1, 6, 2, 3]):
        detok = Detokenizer.from_tokenizer(odd)
        assert not detok.uses_backend
        assert tr._incremental_ends(detok.decode, ids, detok.text(ids)) is None
        got = tr.decode_with_offsets(odd, ids)
        assert calls[-1] == ids  # the prefix method was used ...
        assert got == reference(odd, ids)  # ... and gives exactly the old result
    assert tr.decode_with_offsets(odd, [1, 2, 3, 4]) == ("a.b", [(0, 1), (1, 2), (1, 2), (2, 3)])
    # A decoder where everything adds up takes the linear path, with the same result.
    calls.clear()
    plain = FakeTokenizer(pieces)
    for ids in ([1, 2, 3, 4], [1, 0, 5, 6, 0]):
        assert tr.decode_with_offsets(plain, ids) == reference(plain, ids)
    assert calls == []


def test_tokenizer_with_its_own_decode_is_held_whole(tokenizer):
    import copy

    class OwnDecode(type(tokenizer)):
        def _decode(self, token_ids, **kw):
            return super()._decode(token_ids, **kw).upper()

    odd = copy.copy(tokenizer)
    odd.__class__ = OwnDecode
    detok = Detokenizer.from_tokenizer(odd)
    assert not detok.uses_backend  # the backend alone would not decode as this class does
    ids = ids_of(tokenizer, "é 😀 abc") + [tokenizer.eos_token_id]
    assert tr.decode_with_offsets(odd, ids) == tr._decode_with_offsets_prefix(odd, ids)
    assert tr.decode_with_offsets(odd, ids)[0] == "É 😀 ABC"
