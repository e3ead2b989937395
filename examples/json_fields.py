"""Extract fields from a sentence as one JSON object: a JSON checker with token-level spans.

The checker reads the first JSON object of the reply with positions (no schema library needed)
and puts each verdict on the characters it is about: a syntax error on the character where
parsing stopped, a wrong or mistyped value on that value, an unexpected or repeated key on that
key, a missing key on the closing brace, text after the object on that text. A reply with no
``{`` at all (prose, a refusal) makes no attempt. The data is inline: no download.

Run from the repository root::

    echo '{"name": "Ada Lovelace", "age": 36, "city": "London"}' > /tmp/answer.txt
    rlsf check --task examples/json_fields.py:JsonFields --example ada --completion /tmp/answer.txt
    rlsf tasks --name examples/json_fields.py
    rlsf train --task examples/json_fields.py:JsonFields --steps 10 --output-dir runs/json_fields
    python examples/json_fields.py          # prints the certificates of a few replies
"""

from __future__ import annotations

import json

from rlsf.feedback import Certificate, Span
from rlsf.tasks import function_task

#: The fields asked for and their JSON types.
FIELDS = {"name": str, "age": int, "city": str}

ROWS = [
    {"id": "ada", "text": "Ada Lovelace was 36 when she died in London.", "name": "Ada Lovelace", "age": 36,
     "city": "London"},
    {"id": "alan", "text": "Alan Turing, aged 41, lived in Wilmslow.", "name": "Alan Turing", "age": 41,
     "city": "Wilmslow"},
    {"id": "grace", "text": "At 85, Grace Hopper was living in Arlington.", "name": "Grace Hopper", "age": 85,
     "city": "Arlington"},
    {"id": "emmy", "text": "Emmy Noether moved to Bryn Mawr; she was 53.", "name": "Emmy Noether", "age": 53,
     "city": "Bryn Mawr"},
    {"id": "kurt", "text": "Kurt Goedel, 71, worked in Princeton.", "name": "Kurt Goedel", "age": 71,
     "city": "Princeton"},
    {"id": "marie", "text": "In Paris, Marie Curie turned 66.", "name": "Marie Curie", "age": 66, "city": "Paris"},
    {"id": "john", "text": "John von Neumann (53) spent his last years in Washington.", "name": "John von Neumann",
     "age": 53, "city": "Washington"},
    {"id": "sofia", "text": "Sofia Kovalevskaya lived in Stockholm and was 41.", "name": "Sofia Kovalevskaya",
     "age": 41, "city": "Stockholm"},
    {"id": "srini", "text": "Srinivasa Ramanujan died at 32 in Kumbakonam.", "name": "Srinivasa Ramanujan",
     "age": 32, "city": "Kumbakonam"},
    {"id": "hedy", "text": "Hedy Lamarr, 85, lived in Casselberry.", "name": "Hedy Lamarr", "age": 85,
     "city": "Casselberry"},
]

PROMPT = ("Extract the person's name, age and city from this sentence: {text}\n"
          "Reply with one JSON object with the keys name (a string), age (an integer) and city (a string).")

_WS = " \t\r\n"
_DECODER = json.JSONDecoder()


class _Bad(Exception):
    """Invalid JSON at ``pos``."""

    def __init__(self, pos: int, message: str) -> None:
        super().__init__(message)
        self.pos, self.message = pos, message


def _skip(s: str, i: int) -> int:
    while i < len(s) and s[i] in _WS:
        i += 1
    return i


def parse_object(s: str, i: int) -> tuple[list[tuple[str, object, int, int, int, int]], int]:
    """The object starting at ``s[i] == "{"``: ``(key, value, key_start, key_end, value_start,
    value_end)`` for each member, and the end of the object."""
    members = []
    i = _skip(s, i + 1)
    if i < len(s) and s[i] == "}":
        return members, i + 1
    while True:
        if i >= len(s) or s[i] != '"':
            raise _Bad(i, "expected a quoted key")
        try:
            key, j = json.decoder.scanstring(s, i + 1)
        except ValueError as e:
            raise _Bad(getattr(e, "pos", i), "bad key string") from None
        key_end = j
        j = _skip(s, j)
        if j >= len(s) or s[j] != ":":
            raise _Bad(j, "expected ':' after the key")
        k = _skip(s, j + 1)
        try:
            value, end = _DECODER.raw_decode(s, k)
        except json.JSONDecodeError as e:
            raise _Bad(e.pos, f"bad value: {e.msg}") from None
        except RecursionError:  # thousands of nested brackets
            raise _Bad(k, "value nested too deeply") from None
        members.append((key, value, i, key_end, k, end))
        i = _skip(s, end)
        if i < len(s) and s[i] == ",":
            i = _skip(s, i + 1)
        elif i < len(s) and s[i] == "}":
            return members, i + 1
        else:
            raise _Bad(i, "expected ',' or '}'")


def check(row: dict, completion: str) -> Certificate:
    start = completion.find("{")
    if start < 0:  # prose, a refusal, "I don't know": no attempt at the answer form
        return Certificate.no_attempt("no_json", "no JSON object in the reply", completion)
    n = len(completion)
    try:
        members, end = parse_object(completion, start)
    except _Bad as e:
        at = min(e.pos, n)
        return Certificate(0.0, "invalid_json", False, [Span(at, min(at + 1, n), -1.0, e.message)])
    share = 1.0 / len(FIELDS)
    spans, right, seen = [], 0, set()
    for key, value, ks, ke, vs, ve in members:
        if key not in FIELDS:
            spans.append(Span(ks, ke, -share, f"unexpected key {key!r}"))
        elif key in seen:
            spans.append(Span(ks, ke, -share, f"key {key!r} repeated"))
        elif type(value) is not FIELDS[key]:  # exact type: a bool is not an int here
            spans.append(Span(vs, ve, -share, f"{key} must be a JSON {FIELDS[key].__name__}"))
        elif value != row[key]:
            spans.append(Span(vs, ve, -share, f"wrong {key}"))
        else:
            right += 1
            spans.append(Span(vs, ve, share / 2, f"right {key}"))
        seen.add(key)
    for key in FIELDS:
        if key not in seen:
            spans.append(Span(end - 1, end, -share, f"missing key {key!r}"))
    rest = completion[end:].strip()
    if rest and rest.strip("`"):  # a closing code fence is fine, anything else is not checked
        first = end + len(completion[end:]) - len(completion[end:].lstrip())
        spans.append(Span(first, n, -share, "text after the JSON object"))
    correct = right == len(FIELDS) and len(members) == len(FIELDS) and not (rest and rest.strip("`"))
    answer = json.dumps({k: v for k, v, *_ in members}, sort_keys=True)
    return Certificate(right / len(FIELDS), "correct" if correct else "wrong_fields", correct, spans,
                       info={"fields_right": right}, answer=answer)


def demonstration(row: dict) -> str:
    return json.dumps({key: row[key] for key in FIELDS})


JsonFields = function_task("json_fields", check, data=ROWS, prompt=PROMPT, demonstration=demonstration,
                           test_size=3, description="Extract name, age and city as one JSON object.")


if __name__ == "__main__":
    task = JsonFields()
    example = task.example("ada")
    for reply in ['{"name": "Ada Lovelace", "age": 36, "city": "London"}', '{"name": "Ada", "age": "36"}',
                  '{"name": "Ada Lovelace" "age": 36}', "Sorry, I cannot help with that."]:
        print(repr(reply))
        print(task.check(example, reply).explain(reply), end="\n\n")
