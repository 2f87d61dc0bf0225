"""One redaction step for everything sdg writes or prints about a config: values under secret-looking key
names (api_key, HF_TOKEN, password, ...), the value after a secret flag in argument lists (`--hf-token X`,
`--api-key=X`), `NAME=value` assignments with a secret-looking NAME (cluster.setup lines, overrides), and
the user:password part of URLs. Applied to the manifest, run state, sweep records and job logs."""

from __future__ import annotations

import re
from typing import Any

MASK = "***"
# The name's LAST component says it is a secret: HF_TOKEN, api_key, --hf-token, password, AWS_SECRET_ACCESS_KEY;
# not max_tokens, seed_token_budget or prompt_tokens.
_SECRET_NAME = re.compile(r"(^|[_.\-])(key|token|secret|passw(or)?d|passphrase|credentials?|auth(orization)?)$",
                          re.IGNORECASE)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@", re.IGNORECASE)
_ASSIGNMENT = re.compile(r"(?P<name>[A-Za-z_][\w.\-/]*)(?P<eq>\s*=\s*)(?P<value>'[^']*'|\"[^\"]*\"|\S+)")
_FLAG = re.compile(r"^--?(?P<name>[\w-]+)(=(?P<value>.*))?$")


def secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def redact_text(text: str) -> str:
    """URL userinfo and secret `NAME=value` assignments masked in free text (a shell line, an override)."""
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    return _ASSIGNMENT.sub(lambda m: f"{m['name']}{m['eq']}{MASK}" if secret_name(m["name"].rsplit(".", 1)[-1])
                           else m.group(0), text)


def _redact_args(args: list[Any]) -> list[Any]:
    out: list[Any] = []
    hide_next = False
    for a in args:
        if hide_next:
            out.append(MASK)
            hide_next = False
            continue
        m = _FLAG.match(a) if isinstance(a, str) else None
        if m and secret_name(m["name"]):
            if m["value"] is None:
                hide_next = True
                out.append(a)
            else:
                out.append(f"{a.split('=', 1)[0]}={MASK}")
            continue
        out.append(redact(a))
    return out


def redact(obj: Any) -> Any:
    """A copy of `obj` (dicts, lists, strings) with every secret masked; other values unchanged."""
    if isinstance(obj, dict):
        return {k: (MASK if isinstance(k, str) and secret_name(k) and v not in (None, "", {}, [])
                    else redact(v)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return _redact_args(list(obj))
    if isinstance(obj, str):
        return redact_text(obj)
    return obj


def redacted_config(cfg: Any) -> dict[str, Any]:
    """A composed config (SdgConfig or DictConfig) as plain data with every secret masked: what the
    manifest and a sweep's records show of the config a run used."""
    from omegaconf import OmegaConf

    node = cfg if OmegaConf.is_config(cfg) else OmegaConf.structured(cfg)
    return redact(OmegaConf.to_container(node, resolve=True))
