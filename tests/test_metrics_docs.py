"""docs/metrics.md's Prometheus recipes are valid: the scrape configs pass
``promtool check config`` and the join queries parse (``promtool check rules``)."""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from tests.test_alert_rules import needs_promtool

DOC = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"


def blocks(kind: str) -> list[str]:
    """The fenced blocks of docs/metrics.md in ``kind`` (``yaml``, or ``""`` for none)."""
    return re.findall(rf"^```{kind}\n(.*?)^```$", DOC.read_text(), re.MULTILINE | re.DOTALL)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)


@needs_promtool
def test_scrape_configs_are_valid(tmp_path: Path) -> None:
    """Every full scrape config (the files it names made in a scratch folder), and the
    several-directors fragment inside the TLS one."""
    configs = [b for b in blocks("yaml") if b.lstrip("# \n").find("scrape_configs:") >= 0]
    fragment = next(b for b in blocks("yaml") if b.startswith("    static_configs:"))
    configs.append(configs[-1].split("    static_configs:")[0] + fragment)
    assert 3 == len(configs)
    for i, text in enumerate(configs):
        for name in re.findall(r"_file: (\S+)", text):
            text = text.replace(name, str(tmp_path / Path(name).name))
            (tmp_path / Path(name).name).write_text("x\n")
        text = re.sub(r"rule_files:\n.*", "", text, flags=re.DOTALL)
        path = tmp_path / f"prometheus{i}.yml"
        path.write_text(text)
        result = promtool("check", "config", str(path))
        assert 0 == result.returncode, result.stdout + result.stderr


@needs_promtool
def test_join_queries_parse(tmp_path: Path) -> None:
    """The node_exporter join's queries are PromQL."""
    text = next(b for b in blocks("") if "group_left (service)" in b)
    queries = [
        "\n".join(line for line in part.splitlines() if not line.startswith("#"))
        for part in text.strip().split("\n\n")
    ]
    assert 2 == len(queries)
    rules = {"groups": [{"name": "docs", "rules": [
        {"record": f"docs:query{i}", "expr": q} for i, q in enumerate(queries)
    ]}]}  # fmt: skip
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = promtool("check", "rules", str(path))
    assert 0 == result.returncode, result.stdout + result.stderr
