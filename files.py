"""Files that appear whole or not at all: written beside, then renamed."""

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def replace_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Calls `write` on a temporary path beside `path`, then renames it.

    A reader, or a crash, never sees a half-written file.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def write_json(path: Path, content: dict[str, Any]) -> None:
    text = json.dumps(content, indent=2, sort_keys=True) + "\n"
    replace_atomically(path, lambda tmp: tmp.write_text(text))
