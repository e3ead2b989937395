"""What a chemistry task checks answers against, computed once per process: a reference's
canonical SMILES, fingerprints and atom neighbourhoods (:func:`reference_info`), a reaction
prompt's molecules (:func:`prompt_molecules`), and the record of a data file's unparsable rows
(:func:`cached_validation`), so that checking the k samples of a prompt, or loading 80,000 USPTO
rows again, costs nothing the second time. The tasks are :mod:`rlsf.tasks.chem`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def cached_validation(path: Path, found: dict[int, str] | None = None) -> dict[int, str] | None:
    """The unparsable rows of ``path`` found by an earlier load (``None``: not checked yet), or
    remember ``found``. Parsing 80,000 USPTO SMILES takes ~17 s; the file's size, time and the
    RDKit version key the record."""
    import hashlib
    import json

    from rlsf.runtime.cache import cache_dir
    from rlsf.runtime.extras import require

    rdkit = require("rdkit", "rlsf.chem")

    st = path.stat()
    # Not keyed by task: forward and retro read the same file and both check both columns.
    key = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{rdkit.__version__}".encode()).hexdigest()
    record = cache_dir() / "chem" / f"{key[:20]}.json"
    if found is None:
        try:
            return {int(k): v for k, v in json.loads(record.read_text()).items()}
        except (OSError, ValueError, AttributeError):
            return None
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        tmp = record.with_suffix(".tmp")
        tmp.write_text(json.dumps(found))
        tmp.replace(record)
    except OSError:
        pass  # a read-only cache only costs the parse next time
    return found


@dataclass(frozen=True)
class ReferenceInfo:
    canonical: str | None
    fingerprints: dict
    neighbourhoods: Any  # Counter of atom neighbourhoods (rlsf.chem.match)
    atoms: int  # heavy atoms


@functools.lru_cache(maxsize=4096)
def reference_info(smiles: str, stereo: bool) -> ReferenceInfo:
    """Canonical SMILES, fingerprints and atom neighbourhoods of a reference, once per process: the
    k samples of a prompt, and every epoch over it, are checked against the same one."""
    from collections import Counter

    from rlsf.chem.match import reference_neighbourhoods
    from rlsf.chem.similarity import fingerprints
    from rlsf.chem.smiles import canonical, parse

    mol = parse(smiles)
    if mol is None:
        return ReferenceInfo(None, {}, Counter(), 0)
    return ReferenceInfo(canonical(mol, stereo), fingerprints(mol), *reference_neighbourhoods(mol))


def alone(completion: str, start: int, end: int) -> bool:
    """Whether the answer ``completion[start:end]`` is the whole reply (but for a marker and punctuation)."""
    from rlsf.chem.answer import _MARKER

    rest = _MARKER.sub(" ", completion[:start] + " " + completion[end:])
    return not rest.strip(" \t\r\n.,;:!?\"'`()")


@functools.lru_cache(maxsize=4096)
def prompt_molecules(smiles: str, stereo: bool):
    """The prompt's molecules of a reaction, once per process: unsanitised (atom indices are SMILES
    token order) and the canonical components with and without stereochemistry (``None`` where RDKit
    cannot sanitise)."""
    from rlsf.chem.smiles import Chem, canonical, parse, rdkit_log

    with rdkit_log():
        raw = Chem.MolFromSmiles(smiles, sanitize=False)
    mol = parse(smiles)
    if mol is None:
        return raw, None
    return raw, (frozenset(canonical(mol, stereo).split(".")), frozenset(canonical(mol, False).split(".")))
