"""Certificates to per-token rewards, on the real SmolLM2 tokenizer."""

import pytest
import torch

from rlsf.feedback import Certificate, Span
from rlsf.feedback.token_rewards import certificate_token_rewards, decode_with_offsets, token_reward_tensor


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
    r = certificate_token_rewards(Certificate(0.0, "x", spans=[Span(emoji, emoji + 1, -1.0)]), offs)
    assert all(r[i] < 0 for i in carriers), (raw, offs)
    assert sum(r) == pytest.approx(-1.0)


def test_span_starting_and_ending_inside_tokens(tokenizer):
    text = "12 + 12 = 24 (left: 24)"
    ids = ids_of(tokenizer, text)
    _, offs = decode_with_offsets(tokenizer, ids)
    span = Span(1, 6, -0.6)  # from inside "12" to inside the second "12"
    hit = [i for i, (s, e) in enumerate(offs) if s < 6 and e > 1]
    r = certificate_token_rewards(Certificate(0.0, "x", spans=[span]), offs)
    assert [i for i, v in enumerate(r) if v != 0] == hit
    assert sum(r) == pytest.approx(-0.6)  # spread: total independent of tokenisation
    r = certificate_token_rewards(Certificate(0.0, "x", spans=[span]), offs, spread_spans=False)
    assert all(r[i] == pytest.approx(-0.6) for i in hit)


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
    assert text == "" and certificate_token_rewards(Certificate(-1.0, "empty", spans=[Span(0, 0, -0.5)]), offs) == [-1.5]
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
    r = certificate_token_rewards(Certificate(0.0, "x", spans=[Span(50, 60, -1.0)]), offs)
    assert sum(r) == pytest.approx(-1.0) and r[-1] == pytest.approx(-1.0)


def test_reward_tensor_alignment(tokenizer):
    a = ids_of(tokenizer, "1 + 2 = 3") + [tokenizer.eos_token_id]
    b = ids_of(tokenizer, "9")
    mask = torch.zeros(2, len(a), dtype=torch.long)
    mask[0, : len(a)] = 1
    mask[1, : len(b)] = 1
    offs = [decode_with_offsets(tokenizer, a)[1], decode_with_offsets(tokenizer, b)[1]]
    certs = [Certificate(1.0, "c", True), Certificate(-1.0, "w")]
    r = token_reward_tensor(certs, offs, mask, mode="sequence")
    assert r.shape == mask.shape
    assert r[0, len(a) - 1] == 1.0 and r[1, len(b) - 1] == -1.0
    assert r[1, len(b):].abs().sum() == 0
    with pytest.raises(ValueError, match="row 1"):
        token_reward_tensor(certs, [offs[0], offs[0]], mask)
