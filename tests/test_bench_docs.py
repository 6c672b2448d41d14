"""The figures of docs/benchmarks.md and README.md are those of the committed JSON under
docs/bench/ (benchmarks/docs.py renders them), and every JSON says where it comes from."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
spec = importlib.util.spec_from_file_location("bench_docs", ROOT / "benchmarks" / "docs.py")
docs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(docs)


def test_every_generated_section_matches_its_json():
    assert docs.stale() == [], "run python benchmarks/docs.py (make bench-docs)"


def test_the_docs_have_their_sections_and_the_readme_no_unbacked_claim():
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    for name in ("knn-engine", "knn-sample-lite0", "scaling", "embed"):
        assert f"<!-- bench:{name} -->" in text and f"<!-- /bench:{name} -->" in text, name
    readme = (ROOT / "README.md").read_text()
    assert "<!-- bench:readme-claim -->" in readme and "<!-- bench:readme-knn -->" in readme
    assert "faster than the libraries it compares" not in readme


@pytest.mark.parametrize("path", sorted((ROOT / "docs" / "bench").glob("*.json")), ids=lambda p: p.name)
def test_every_result_records_where_it_comes_from(path):
    result = json.loads(path.read_text())
    m, p = result["machine"], result["provenance"]
    assert m["cpu_model"] and isinstance(m["cpu_flags"], list) and m["cores"] >= 1
    assert result["libraries"]["numpy"] and result["libraries"]["torch"]
    assert p["commit"] and len(p["commit"]) == 40 and p["date"] and p["command"]
    assert "interleaved" in p["conditions"] and p["load_before"] and p["load_after"]


def test_a_table_edited_by_hand_is_caught_and_prose_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(docs, "BENCH", tmp_path)
    (tmp_path / "load.json").write_text(json.dumps({
        "columns": ["users", "p50 ms"], "rows": [[10, 1.5], [100, 4.25]], "notes": ["Best of 3."],
        "machine": {"cpu_model": "X", "cores": 2, "cpu_flags": ["avx2"]},
        "provenance": {"date": "2026-11-29T05:00:00Z", "commit": "a" * 40, "command": "python load.py"}}))
    page = tmp_path / "page.md"
    with pytest.raises(SystemExit, match="opens inside"):  # sections do not nest
        docs._check_markers("<!-- bench:a --><!-- bench:b --><!-- /bench:b --><!-- /bench:a -->", page)
    with pytest.raises(SystemExit, match="never closed"):
        docs._check_markers("<!-- bench:a -->\ntext\n", page)
    page.write_text("Intro, by hand.\n\n<!-- bench:load -->\nold\n<!-- /bench:load -->\n\nOutro 0.5x, by hand.\n")
    assert docs.stale((page,)) == [f"{page}: load"]
    page.write_text(docs.rendered(page.read_text(), page))
    text = page.read_text()
    assert text.startswith("Intro, by hand.\n\n<!-- bench:load -->\n| users | p50 ms |")
    assert "| 100 | 4.25 |" in text and "Best of 3." in text and text.endswith("Outro 0.5x, by hand.\n")
    assert docs.stale((page,)) == []
    page.write_text(text.replace("| 100 | 4.25 |", "| 100 | 3.90 |"))  # a figure improved by hand
    assert docs.stale((page,)) == [f"{page}: load"]
    with pytest.raises(SystemExit, match="no .*nothing.json"):
        docs.rendered("<!-- bench:nothing --><!-- /bench:nothing -->", page)
