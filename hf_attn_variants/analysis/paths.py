"""Checks of the model paths the commands are given, before anything loads: a missing local folder
is named as such (transformers would report it as a malformed Hub repo id)."""

from __future__ import annotations

import os
import re

# a Hub model id: "name" or "owner/name" (letters, digits, -, _, .)
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def check_model_path(path: str | os.PathLike, what: str = "model") -> str:
    """``path`` when it is a saved model folder or could be a Hub id; else FileNotFoundError /
    NotADirectoryError naming it."""
    text = str(path)
    if os.path.isdir(text):
        if not os.path.isfile(os.path.join(text, "config.json")):
            raise FileNotFoundError(f"{what} {text!r}: the folder has no config.json (not a saved model)")
        return text
    if os.path.exists(text):
        raise NotADirectoryError(f"{what} {text!r} is a file: expected a saved model folder or a Hub id")
    if not HUB_ID.fullmatch(text) or text.startswith((".", "~")):
        raise FileNotFoundError(f"{what} {text!r}: no such folder")
    return text
