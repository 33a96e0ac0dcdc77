"""Class names for localization outputs, and finding a class from what a user types.

ImageNet-1k names come from timm's bundled ``ImageNetInfo`` (offline): index order is the standard sorted
WordNet-id order of timm's ImageNet classifiers. The one description that appears twice ("crane", the
bird and the machine) gets its WordNet id appended, so every name is unique.
"""

from __future__ import annotations

import re
from typing import Sequence

from scarce.errors import ConfigError


_WNID_SUFFIX = re.compile(r" \(n\d{8}\)$")


def imagenet_classes() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(names, wordnet_ids)`` of the 1000 ImageNet-1k classes, in classifier index order."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    ids = tuple(info.index_to_label_name(i) for i in range(info.num_classes()))
    names = [info.index_to_description(i) for i in range(info.num_classes())]
    repeated = {name for name in names if names.count(name) > 1}
    return tuple(f"{n} ({w})" if n in repeated else n for n, w in zip(names, ids)), ids


def find_class(query: str, names: Sequence[str], ids: Sequence[str] = ()) -> int:
    """Index of the class a user named: an index, a WordNet id, a full name or one of its comma-separated synonyms.

    Case is ignored; a query matching several classes (e.g. "crane") is an error listing them.
    """
    text = query.strip()
    if text.isdigit():
        index = int(text)
        if index >= len(names):
            raise ConfigError(f"class index {index} is out of range (the model has {len(names)} classes)")
        return index
    lowered = text.lower()
    exact = [i for i, name in enumerate(names) if name.lower() == lowered or (i < len(ids) and ids[i].lower() == lowered)]
    if len(exact) == 1:
        return exact[0]
    bases = [_WNID_SUFFIX.sub("", name) for name in names]  # "crane (n02012849)" is also a "crane"
    synonyms = [i for i, name in enumerate(bases) if lowered in (s.strip().lower() for s in name.split(","))]
    found = exact or synonyms
    if len(found) == 1:
        return found[0]
    if found:
        listed = "; ".join(f"{i}: {names[i]}" for i in found)
        raise ConfigError(f"class {query!r} is ambiguous ({listed}); give the index instead")
    close = [name for name in names if lowered in name.lower()][:8]
    hint = f"; did you mean: {' | '.join(close)}" if close else ""
    raise ConfigError(f"no class named {query!r} among the model's {len(names)} classes{hint}")
