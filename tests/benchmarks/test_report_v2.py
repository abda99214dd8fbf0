"""The yardstick's "Where SurgUn stands" table: generated from the records, and the README's is the generated one."""

from pathlib import Path

from surgun_pack.benchmarks.toy_canvas.report_v2 import best_table, pixel_table, read_jsonl, standing, summarise

REPO = Path(__file__).resolve().parents[2]
TARGETS = ["style:neon", "style:stripes", "object:square", "object:triangle"]


def test_the_readme_shows_the_table_the_committed_records_give():
    """A reader of the README sees what the records say: every row of its "Where SurgUn stands" table is the row the report
    generates from benchmarks/results/toy_canvas_v2/runs.jsonl (regenerate it with --report-only after merging runs)."""
    done = read_jsonl(REPO / "benchmarks" / "results" / "toy_canvas_v2" / "runs.jsonl")
    table = standing(done, best_table(summarise(done)), TARGETS)
    readme = [line.strip() for line in (REPO / "README.md").read_text().splitlines()]
    start = readme.index(table[0])
    assert readme[start:start + len(table)] == table
    assert not readme[start + len(table)].startswith("|")  # no row the records do not give


def test_the_readme_shows_the_retain_in_pixels_table_the_committed_records_give():
    """The README's "Retain in pixels" table is the one the report generates from the committed records, row for row."""
    done = read_jsonl(REPO / "benchmarks" / "results" / "toy_canvas_v2" / "runs.jsonl")
    table = pixel_table(done, best_table(summarise(done)), TARGETS)
    assert len(table) > 3  # the floor and at least one method
    readme = [line.strip() for line in (REPO / "README.md").read_text().splitlines()]
    start = readme.index(table[0])
    assert readme[start:start + len(table)] == table
    assert not readme[start + len(table)].startswith("|")


def _grid(method, target, lr, seed, h, **kw):
    return {"phase": "grid", "method": method, "target": target, "kind": target.split(":")[0], "lr": lr, "seed": seed, "H": h,
            "UA": h, "IRA": 1.0, "CRA": 1.0, "related_IRA": 0.9, "kept_on_target": 0.8, "mode_spread_bits": 0.0,
            "IRA_rel": 1.0, "CRA_rel": 1.0, **kw}


def test_each_row_is_the_method_at_its_best_lr_with_its_own_attacks():
    """SurgUn's row takes the lr with the higher mean H over the kind's targets (its sd over seeds), and the attack run at that
    lr; UCE takes its best lambda per target, a tie going to the lambda its attack ran at."""
    recs = [_grid("surgun", "style:neon", 1e-3, 0, 0.5), _grid("surgun", "style:neon", 3e-3, 0, 0.9),
            _grid("surgun", "style:neon", 3e-3, 1, 0.7),
            {"phase": "attack", "method": "surgun", "target": "style:neon", "kind": "style", "lr": 3e-3, "seed": 0,
             "soft@150": 0.25, "paraphrase": 0.5},
            {"phase": "attack", "method": "surgun", "target": "style:neon", "kind": "style", "lr": 1e-3, "seed": 0,
             "soft@150": 1.0, "paraphrase": 1.0},
            _grid("uce", "style:neon", 1.0, 0, 1.0), _grid("uce", "style:neon", 10.0, 0, 1.0, kept_on_target=0.4),
            _grid("uce", "style:neon", 0.1, 0, 1.0),
            {"phase": "attack", "method": "uce", "target": "style:neon", "kind": "style", "lr": 1.0, "seed": 0,
             "soft@150": 0.75, "paraphrase": 0.0}]
    done = {i: r for i, r in enumerate(recs)}
    rows = {r.split(" | ")[0].strip("| *"): r.split(" | ") for r in standing(done, best_table(summarise(done)), ["style:neon"])[2:]}
    assert rows["SurgUn (defaults)"][1:] == ["0.800 (0.14)", "0.80", "0.90", "0.25", "0.50", "2 (1) |"]
    assert rows["UCE"][1:] == ["1.000", "0.80", "0.90", "0.75", "0.00", "1 (1) |"]


def test_every_row_of_the_readmes_per_target_tables_is_what_the_records_give():
    """Each row of the README's per-target tables (Style `neon`, Object `square`, Object `triangle`, Style `stripes`) names
    a method by its label and an lr; its cells are those the committed records give for that method, target and lr. A row
    left behind when runs were merged fails here."""
    import re

    from surgun_pack.benchmarks.toy_canvas.report_v2 import README_LABELS, row_cells

    done = read_jsonl(REPO / "benchmarks" / "results" / "toy_canvas_v2" / "runs.jsonl")
    lines = [line.strip() for line in (REPO / "README.md").read_text().splitlines()]
    checked = 0
    for title, target in (("Style `neon`:", "style:neon"), ("Object `square`:", "object:square"),
                          ("Object `triangle`:", "object:triangle"), ("Style `stripes`:", "style:stripes")):
        i = lines.index(title) + 4  # the title, a blank line, the header and its rule
        while lines[i].startswith("|"):
            head, cells = lines[i].strip("|").strip().split(" | ", 1)
            label, lr = re.fullmatch(r"(.*) \((?:lambda )?([0-9.e-]+)(?: edge)?\)", head).groups()
            assert cells.rstrip(" |") == row_cells(done, target, README_LABELS[label], float(lr)), (target, head)
            i, checked = i + 1, checked + 1
    assert checked >= 100
