"""The editor clients agree with the server on settings and commands.

The server's settings dataclass (``hrm_lsp/server/settings.py``) is the source of truth; the
VS Code extension declares the same settings in ``package.json`` (with the same defaults,
types and ranges) and maps them in ``src/settings.ts``, and the Neovim plugin checks the same
keys in ``lua/hrm_lsp/config.lua``. When a setting is added or renamed on the server, these
tests name what each client is missing.
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from pathlib import Path

from hrm_lsp.server import server as lsp_server
from hrm_lsp.server.settings import SECTION, STAGES, Settings, parse_settings

ROOT = Path(__file__).resolve().parents[1]
VSCODE = ROOT / "editors" / "vscode"
NEOVIM = ROOT / "editors" / "neovim"
CLIENT_ONLY = {"server.path", "server.extraArgs", "server.logFile", "trace.server"}


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def server_fields() -> dict[str, dataclasses.Field]:
    return {camel(f.name): f for f in dataclasses.fields(Settings)}


def vscode_properties() -> dict[str, dict]:
    pkg = json.loads((VSCODE / "package.json").read_text(encoding="utf-8"))
    props = pkg["contributes"]["configuration"]["properties"]
    prefix = SECTION + "."
    assert all(k.startswith(prefix) for k in props), "every setting lives under " + prefix
    return {k[len(prefix):]: v for k, v in props.items()}


def test_vscode_declares_every_server_setting_and_nothing_else():
    props = vscode_properties()
    server_keys = set(server_fields())
    assert set(props) - CLIENT_ONLY == server_keys, (
        f"missing in package.json: {sorted(server_keys - set(props))}; "
        f"unknown to the server: {sorted(set(props) - CLIENT_ONLY - server_keys)}")


def test_vscode_defaults_types_and_enums_match_the_server():
    props = vscode_properties()
    defaults = Settings()
    hints = typing.get_type_hints(Settings)
    json_type = {str: "string", bool: "boolean", int: "integer", float: "number"}
    for key, field in server_fields().items():
        prop = props[key]
        value = getattr(defaults, field.name)
        expected = list(value) if isinstance(value, tuple) else value
        assert prop["default"] == expected, f"{key}: default {prop['default']!r} != server {expected!r}"
        tp = hints[field.name]
        if typing.get_origin(tp) is typing.Literal:
            assert prop["type"] == "string" and prop["enum"] == list(typing.get_args(tp)), key
        elif typing.get_origin(tp) is tuple:
            assert prop["type"] == "array" and prop["items"]["enum"] == list(STAGES), key
        else:
            assert prop["type"] == json_type[tp], f"{key}: {prop['type']} vs {tp}"


def test_vscode_ranges_are_accepted_by_the_server_at_both_ends():
    # Values at the edges VS Code allows must be valid server settings (no warning).
    for key, prop in vscode_properties().items():
        if key in CLIENT_ONLY:
            continue
        for bound in ("minimum", "maximum"):
            if bound in prop:
                _, warnings = parse_settings({key: prop[bound]})
                assert warnings == [], f"{key}={prop[bound]}: {warnings}"
        for value in prop.get("enum", []):
            _, warnings = parse_settings({key: value})
            assert warnings == [], f"{key}={value}: {warnings}"


def test_vscode_settings_module_lists_the_server_keys():
    src = (VSCODE / "src" / "settings.ts").read_text(encoding="utf-8")
    block = src[src.index("export const SERVER_SETTINGS"):]
    block = block[: block.index("};")]
    keys = set(re.findall(r"^\s+(\w+):", block, re.M))
    assert keys == set(server_fields())


def test_neovim_config_lists_the_server_keys():
    src = (NEOVIM / "lua" / "hrm_lsp" / "config.lua").read_text(encoding="utf-8")
    block = src[src.index("M.SERVER_SETTINGS = {"):]
    block = block[: block.index("\n}")]
    keys = set(re.findall(r"^\s+(\w+) = \"", block, re.M))
    assert keys == set(server_fields())


def test_clients_use_the_servers_command_ids():
    actions = (VSCODE / "src" / "actions.ts").read_text(encoding="utf-8")
    assert f'refine: "{lsp_server.COMMAND_REFINE}"' in actions
    assert f'status: "{lsp_server.COMMAND_STATUS}"' in actions
    init = (NEOVIM / "lua" / "hrm_lsp" / "init.lua").read_text(encoding="utf-8")
    assert f'"{lsp_server.TITLE_REFINE}"' in init
    assert f'"{lsp_server.COMMAND_STATUS}"' in init


def test_null_means_default_for_every_key():
    # Both clients answer workspace/configuration with null for keys the user did not set.
    settings, warnings = parse_settings({camel(f.name): None for f in dataclasses.fields(Settings)},
                                        Settings(max_tokens=7))
    assert (settings, warnings) == (Settings(), [])
