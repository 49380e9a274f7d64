"""docs/platform-guide.md "Sizing" is the one place for sizing figures, and bench/sizing.py prints
the same tables under the same names. The replay-cache rows are what the DPoP filter itself logs
for each peak rate in real Envoy, so they are compared figure for figure with a fresh run; the
memory and CPU rows depend on the machine and are compared by their names and columns."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import sizing  # noqa: E402  (bench/sizing.py)

GUIDE = (ROOT / "docs" / "platform-guide.md").read_text()


def section(title: str) -> str:
    m = re.search(rf"^### {re.escape(title)}\n(.*?)(?=^##)", GUIDE, re.S | re.M)
    assert m, f"docs/platform-guide.md has no section `### {title}` under Sizing"
    return m.group(1)


def table(text: str, head: str) -> list[str]:
    lines = text.splitlines()
    assert head in lines, f"table header {head!r} not in the section"
    i = lines.index(head) + 2
    rows = []
    while i < len(lines) and lines[i].startswith("|"):
        rows.append(lines[i])
        i += 1
    return rows


@pytest.mark.parametrize("title,head", [(sizing.MEMORY, sizing.MEMORY_HEAD), (sizing.REPLAY, sizing.REPLAY_HEAD),
                                        (sizing.CPU, sizing.CPU_HEAD)])
def test_each_sizing_table_is_in_the_guide_under_the_benchmarks_name(title, head):
    rows = table(section(title), head)
    assert rows, title
    assert "bench/sizing.py" in GUIDE.split("## Sizing", 1)[1].split("\n## ", 1)[0], "the command is not named"


def test_memory_and_cpu_rows_cover_every_layout():
    layouts = {label for label, _ in sizing.LAYOUTS}
    mem = table(section(sizing.MEMORY), sizing.MEMORY_HEAD)
    cpu = table(section(sizing.CPU), sizing.CPU_HEAD)
    assert {r.split("|")[1].strip() for r in mem} == layouts
    assert {r.split("|")[1].strip() for r in cpu} == {label for label, _ in sizing.CPU_LAYOUTS}


def test_other_documents_point_to_the_sizing_section_instead_of_repeating_figures():
    for doc in ("README.md", "bench/README.md", "docs/dpop.md"):
        text = (ROOT / doc).read_text()
        assert "platform-guide.md#sizing" in text or "platform-guide.md#replay-cache-budget-by-peak-rate" in text, doc
    # The figures that used to disagree between documents are gone from them.
    assert "32.5 MB" not in (ROOT / "docs" / "dpop.md").read_text()
    assert not re.search(r"\d+–\d+ MB more RSS", (ROOT / "README.md").read_text())


@pytest.mark.e2e
def test_the_benchmark_prints_the_guides_replay_cache_rows():
    peaks = [int(r.split("|")[1].strip().replace(",", "")) for r in table(section(sizing.REPLAY), sizing.REPLAY_HEAD)]
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "sizing.py"), "--parts", "replay",
                        "--peaks", ",".join(map(str, peaks))], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"{sizing.REPLAY}:" in p.stdout
    assert table(p.stdout, sizing.REPLAY_HEAD) == table(section(sizing.REPLAY), sizing.REPLAY_HEAD)
