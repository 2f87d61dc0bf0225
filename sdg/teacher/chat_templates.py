"""`teacher.chat_template`: the Jinja chat template a server sdg starts is told to use.

A value is a file (a Jinja template, as `ilab model serve --chat-template` and vLLM take) or the name of a
template shipped here. Both backends get a file: vLLM `--chat-template FILE`, the llama.cpp child reads it
into xllamacpp's `CommonParams.chat_template` (Jinja). A shipped template is written next to the server
logs when it is used, so the file the server read can be looked at.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from sdg.errors import ConfigError

# ChatML (<|im_start|>role ... <|im_end|>), which SmolLM2, Qwen and many fine-tunes were trained on.
CHATML = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

BUILTIN: dict[str, str] = {"chatml": CHATML}


def resolve_chat_template(value: str | None, write_dir: Path) -> Path | None:
    """The template file for `teacher.chat_template` (None: the model's own template).

    A name in BUILTIN is written to `write_dir/chat-template-<name>.jinja` (atomically, so replicas starting
    at once never read half a file); anything else must be an existing file."""
    if value is None or not str(value).strip():
        return None
    text = str(value).strip()
    if text in BUILTIN:
        write_dir = Path(write_dir).expanduser()
        write_dir.mkdir(parents=True, exist_ok=True)
        path = write_dir / f"chat-template-{text}.jinja"
        body = BUILTIN[text]
        if not (path.is_file() and path.read_text(encoding="utf-8") == body):
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=write_dir)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(body)
            os.replace(tmp, path)
        return path
    path = Path(text).expanduser()
    if not path.is_file():
        raise ConfigError(f"teacher.chat_template '{text}' is neither a file nor a template shipped with sdg "
                          f"({', '.join(sorted(BUILTIN))})")
    return path.resolve()
