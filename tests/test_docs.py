"""The user docs stay true to the code: every config key is documented in docs/sweeps.md, every
`gitsweep ...` command in a code block of docs/*.md and README.md is a valid command (and, where its
config is a bundled preset, its `--set`s load and validate), and every relative link resolves."""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path

import pytest

from sweeps.cli import build_parser
from sweeps.config import ParamSpace, SweepConfig, load_config
from sweeps.config_yaml import preset_names

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]
# The pages written together with this test; anchors are checked for links out of these.
USER_PAGES = ("quickstart.md", "sweeps.md", "mlflow.md", "concepts.md", "reproducing.md")
SHELL_LANGS = ("", "bash", "sh", "shell", "console")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


# ---- config keys ----------------------------------------------------------------------------------


def config_keys() -> list[str]:
    return sorted(k for k in SweepConfig().flat() if not k.startswith("search.space"))


def test_every_config_key_is_documented() -> None:
    text = (DOCS / "sweeps.md").read_text()
    keys = config_keys()
    assert len(keys) > 60  # the flattening really reached the nested dataclasses
    missing = [k for k in keys if f"`{k}`" not in text]
    assert not missing, f"config keys missing from docs/sweeps.md: {missing}"


def test_search_space_fields_are_documented() -> None:
    text = (DOCS / "sweeps.md").read_text()
    section = text[text.index("### `search.space.<key>` entries"):]
    missing = [f.name for f in dataclasses.fields(ParamSpace) if f"`{f.name}`" not in section]
    assert not missing, f"search.space fields missing from docs/sweeps.md: {missing}"


def test_every_preset_is_documented() -> None:
    text = (DOCS / "sweeps.md").read_text()
    missing = [p for p in preset_names() if f"| `{p}` |" not in text]
    assert not missing, f"presets missing from the table in docs/sweeps.md: {missing}"


# ---- commands in code blocks ----------------------------------------------------------------------


def code_blocks(text: str) -> list[str]:
    """Fenced blocks in a shell language (or none) and indented (4-space) blocks."""
    blocks: list[str] = []
    fenced = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```", re.M | re.S)
    for m in fenced.finditer(text):
        if m.group(1).lower() in SHELL_LANGS:
            blocks.append(m.group(2))
    rest = fenced.sub("", text)
    current: list[str] = []
    previous_blank = True
    for line in rest.splitlines():
        indented = line.startswith("    ") and line.strip()
        if indented and (current or previous_blank):
            current.append(line[4:])
        elif current and not line.strip():
            current.append("")
        else:
            if current:
                blocks.append("\n".join(current))
            current = []
        previous_blank = not line.strip()
    if current:
        blocks.append("\n".join(current))
    return blocks


COMMAND = re.compile(r"(?:^|[;&|(]|\s--)[ \t]*(?:\w+=\S+[ \t]+)*(?:[\w.~/-]*/)?gitsweep[ \t]+(?=[a-z])([^\n;|&)`]*)",
                     re.M)


def doc_commands() -> list[tuple[str, list[str]]]:
    out = []
    for page in PAGES:
        for block in code_blocks(page.read_text()):
            block = block.replace("\\\n", " ")
            for m in COMMAND.finditer(block):
                out.append((_rel(page), shlex.split(m.group(1), comments=True)))
    return out


def test_docs_have_commands() -> None:
    pages = {where for where, _ in doc_commands()}
    for name in ("docs/quickstart.md", "docs/sweeps.md", "docs/reproducing.md", "README.md"):
        assert name in pages, f"no gitsweep command found in a code block of {name}"


@pytest.mark.parametrize("where,args", doc_commands(), ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_doc_command_parses_and_validates(where: str, args: list[str]) -> None:
    try:
        parsed = build_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"{where}: `gitsweep {' '.join(args)}` is not a valid gitsweep command")
    config = getattr(parsed, "config", None)
    if config in preset_names():
        cfg, _ = load_config(config, parsed.overrides)  # --set keys exist, values validate
        if parsed.command == "run":
            from sweeps import search

            search.check(cfg)  # the search setup (sampler, grid steps, metrics) can run


# ---- links ----------------------------------------------------------------------------------------


LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation (but - and _) dropped, spaces to hyphens."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.*?)\s*#*\s*$", text, re.M)}


def doc_links() -> list[tuple[Path, str]]:
    out = []
    for page in PAGES:
        text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
        text = re.sub(r"`[^`\n]*`", "", text)  # code spans are not links
        out += [(page, target) for target in LINK.findall(text)]
    return out


def test_docs_have_links() -> None:
    assert len(doc_links()) >= 10


@pytest.mark.parametrize("page,target", doc_links(), ids=lambda v: _rel(v) if isinstance(v, Path) else v)
def test_relative_link_resolves(page: Path, target: str) -> None:
    if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ...
        return
    path_part, _, anchor = target.partition("#")
    dest = (page.parent / path_part).resolve() if path_part else page
    assert dest.exists(), f"{_rel(page)}: link to {target} points to a missing file"
    if anchor and page.name in USER_PAGES and dest.suffix == ".md":
        assert anchor in anchors(dest), f"{_rel(page)}: link to {target}: no heading with that anchor"


# ---- registries -----------------------------------------------------------------------------------


def test_registry_names_are_the_config_values_and_the_documented_ones() -> None:
    from gitlib.errors import ConfigError
    from sweeps.config import choices

    text = (DOCS / "sweeps.md").read_text()
    fields = choices()
    assert {"trial", "dataset.source", "dataset.nuisance", "dataset.profile", "classifier.arch",
            "classifier.loss", "classifier.train_rule"} <= set(fields)  # every real choice is a registry
    for key, registry in fields.items():
        row = next((ln for ln in text.splitlines() if ln.startswith(f"| `{key}` |")), None)
        assert row is not None, f"{key} has no row in docs/sweeps.md"
        documented = re.findall(r"`([^`|]+)`", re.split(r"(?<!\\)\|", row)[2])  # cells split at unescaped pipes
        assert sorted(documented) == sorted(registry.names()), key  # the docs list exactly the registered names
        with pytest.raises(ConfigError) as info:
            load_config("demo", [f"{key}=no-such-name"])
        listed = str(info.value).split("(valid: ")[1].rstrip(")").split(", ")
        assert listed == list(registry.names()), key  # and so does the error a user sees
