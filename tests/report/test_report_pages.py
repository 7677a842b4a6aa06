"""The pages say which samples each figure uses, and show what the run recorded (issue 12,
R1-R10, the index summary, exemplar strips, skipped images, concept sources)."""

from __future__ import annotations

import html
import json
import re

import numpy as np
import pytest
from report_runs import HOSTILE, records, small_run, write_records
from scipy.stats import norm

from invert.report import auroc_ci, build_report, load_run
from invert.report.stats import auroc_score_ci, holdout_status
from invert.report.thumbs import short_name
from invert.report.unit import _misses

pytest.importorskip("jinja2")


def _text(page: str) -> str:
    """The visible text of a page: tags dropped, entities decoded, spaces collapsed."""
    page = re.sub(r"<(script|style|svg)\b.*?</\1>", " ", page, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))


def _unit(out, k: int = 0) -> str:
    return (out / "report" / "units" / "feat" / f"{k}.html").read_text()


# ----------------------------------------------------------------------------- R4: intervals


def test_score_interval_does_not_collapse_with_few_positives():
    assert auroc_ci(1.0, 5, 5) == (1.0, 1.0)  # the Wald interval of invert.trust does
    lo, hi = auroc_score_ci(1.0, 5, 5)
    assert hi == 1.0 and lo < 0.75
    lo, hi = auroc_score_ci(1.0, 5, 200)
    assert hi == 1.0 and 0.7 < lo < 0.9
    lo2, _ = auroc_score_ci(1.0, 500, 2000)
    assert lo2 > 0.99  # and it narrows with n
    lo, hi = auroc_score_ci(np.array([0.3, 0.5, 0.9]), 10, 10)
    assert np.all((0 <= lo) & (lo <= [0.3, 0.5, 0.9]) & ([0.3, 0.5, 0.9] <= hi) & (hi <= 1))
    assert all(np.isnan(auroc_score_ci(0.7, 0, 10)))


def test_score_interval_covers_at_small_n():
    rng = np.random.default_rng(1)
    for n1, n0, auc in ((5, 200, 0.95), (5, 5, 0.9), (3, 100, 0.99)):
        d = norm.ppf(auc) * np.sqrt(2)
        x = rng.normal(d, 1, (1500, n1, 1))
        y = rng.normal(0, 1, (1500, 1, n0))
        a = (x > y).mean(axis=(1, 2))
        lo, hi = auroc_score_ci(a, n1, n0)
        cover = np.mean((lo <= auc) & (auc <= hi))
        assert cover > 0.93, (n1, n0, auc, cover)


def test_holdout_status():
    assert holdout_status(0.928, 0.396, auroc_score_ci(0.396, 10, 190)) == "fails"
    assert holdout_status(0.95, 0.93, auroc_score_ci(0.93, 30, 170)) == "holds"
    assert holdout_status(0.95, 0.62, auroc_score_ci(0.62, 3, 20)) == "unconfirmed"
    assert holdout_status(0.1, 0.2, auroc_score_ci(0.2, 30, 170)) == "holds"  # mode negative
    assert holdout_status(0.1, 0.6, (0.4, 0.8)) == "fails"
    assert holdout_status(0.9, None, None) is None


# ----------------------------------------------------------------------------- R1, R2


def test_search_split_figures_are_labelled_and_consistent(run_with_images):
    out = run_with_images["out"]
    build_report(out, progress=False)
    run = json.loads((out / "run.json").read_text())
    held = run["layers"][0]["holdout_index"]
    n = len(run["sample_ids"])
    n_search, n_held = n - len(held), len(held)
    best = records(out)[0]["explanations"][0]
    page = _unit(out)
    text = _text(page)
    assert f"of the {n_search} search-split samples" in text  # R1: not "of 120 samples"
    assert f"AUROC, search split ({n_search} samples)" in text
    assert f"Search split the {n_search} samples the search used" in text
    assert f"Held-out split the {n_held} held-out samples" in text
    rocs = re.findall(r"AUROC (\d\.\d{3})</text>", page)
    assert rocs == [f"{best['auroc']:.3f}", f"{best['holdout_auroc']:.3f}"]  # R2
    hists = re.findall(r"inside formula \(n=(\d+)\)", page)
    assert hists == [str(best["support"]), str(best["holdout_support"])]


def test_split_is_recomputed_for_runs_without_holdout_index(run_with_images):
    out = run_with_images["out"]
    run = json.loads((out / "run.json").read_text())
    n_search = len(run["sample_ids"]) - len(run["layers"][0].pop("holdout_index"))
    (out / "run.json").write_text(json.dumps(run))
    build_report(out, progress=False)
    assert f"of the {n_search} search-split samples" in _text(_unit(out))
    run["params"].pop("random_state")  # cannot be recomputed: said so, sizes still right
    (out / "run.json").write_text(json.dumps(run))
    build_report(out, progress=False)
    text = _text(_unit(out))
    assert "search split is not recorded" in text and f"({n_search} samples)" in text
    assert "All samples all 120 samples" in text


def test_without_holdout_every_figure_is_of_all_samples(tmp_path):
    out = small_run(tmp_path / "o", holdout=None, permutations=0)["out"]
    build_report(out, progress=False)
    text = _text(_unit(out))
    assert "AUROC, all samples (120 samples)" in text and "of the 120 samples" in text
    assert "All samples all 120 samples" in text and "Held-out split" not in text


# ----------------------------------------------------------------------------- R3


def test_misses_are_members_below_the_threshold_at_the_support():
    a = np.array([9.0, 8, 7, 6, 5, 4, 3, 2, 1, 0])
    mask = np.zeros(10, dtype=bool)
    mask[[0, 1, 2]] = True  # the top 3 are the 3 members: nothing missed
    missed, thr = _misses(a, mask, 1.0)
    assert missed.size == 0 and thr == 7
    mask[[2, 8]] = [False, True]  # members 0, 1, 8; the 3rd highest is 7: sample 8 missed
    missed, thr = _misses(a, mask, 0.8)
    assert missed.tolist() == [8] and thr == 7
    missed, thr = _misses(-a, mask, 0.2)  # an explanation by low activation: mirrored
    assert missed.tolist() == [8]


def test_misses_section_never_lists_top_activators(run_with_images):
    out = run_with_images["out"]
    a, y = run_with_images["a"], run_with_images["y"]
    build_report(out, progress=False)
    page = _unit(out)
    assert "Members of the formula the unit misses" in page
    section = page[page.index("Members of the formula the unit misses"):]
    section = section[:section.index("<h2", 10)]
    missed_ids = re.findall(r'title="([^"]+\.png)"', section)
    ids = run_with_images["ids"]
    k = int(y[:, 0].sum())
    top = set(np.argsort(-a[:, 0])[:k].tolist())
    assert missed_ids and all(ids.index(s) not in top for s in missed_ids)
    gallery = page[page.index('id="top"'):page.index("Members of the formula")]
    assert not set(re.findall(r'title="([^"]+\.png)"', gallery)) & set(missed_ids)
    assert f"members are; the {len(missed_ids)} lowest are shown" in _text(section) or (
        "the rest are shown" in _text(section))


# ----------------------------------------------------------------------------- R5, R6, R7


def test_a_unit_failing_its_holdout_is_flagged(run_with_images):
    out = run_with_images["out"]
    recs = records(out)
    recs[0]["explanations"][0]["holdout_auroc"] = 0.396
    write_records(out, recs)
    build_report(out, progress=False)
    page = _unit(out)
    assert 'class="badge bad"' in page and "fails its holdout" in page
    index = (out / "report" / "index.html").read_text()
    row = index[index.index('href="units/feat/0.html"'):]
    row = row[:row.index("</tr>")]
    assert 'class="badge bad"' in row and ">fails<" in row
    assert "0 of 3 hold up" not in _text(index) and "fail their holdout" in _text(index)


def test_index_has_q_and_significant_columns_and_the_legend_on_top(run_with_images):
    out = run_with_images["out"]
    build_report(out, progress=False)
    index = (out / "report" / "index.html").read_text()
    head = index[index.index("<thead>"):index.index("</thead>")]
    assert ">q-value<" in head and ">significant<" in head
    q = records(out)[0]["explanations"][0]["q_value"]
    assert f'data-v="{q}"' in index
    assert index.index('id="legend"') < index.index('<table id="units"')
    assert index.index('id="summary"') < index.index('<table id="units"')


def test_no_wrapping_and_subtitle_spaces(run_with_images):
    out = run_with_images["out"]
    build_report(out, progress=False)
    css = (out / "report" / "assets" / "style.css").read_text()
    assert re.search(r"td\.num, th\.num, th \{ white-space: nowrap; \}", css)
    index = (out / "report" / "index.html").read_text()
    meta = _text(index[index.index('<div class="meta">'):index.index("</header>")])
    assert "(3 units) · formulas up to length 2, beam" in meta
    assert re.search(r"\S·|·\S", meta) is None


# ----------------------------------------------------------------------------- R8, R9, R10


def test_captions_show_the_file_name_cut_in_the_middle(run_with_images):
    assert short_name("a/b/short.png") == "short.png"
    name = short_name("dogs/very_long_file_name_number_007.png")
    assert len(name) == 18 and name.startswith("very_long") and name.endswith("007.png")
    assert "\u2026" in name
    out = run_with_images["out"]
    build_report(out, progress=False)
    page = _unit(out)
    caps = re.findall(r'<div class="sid" title="([^"]+)">([^<]+)</div>', page)
    assert caps and all(short_name(full) == html.unescape(cut) for full, cut in caps)
    assert all("/" in full for full, _ in caps)  # the tooltip has the whole id


def test_without_images_no_empty_frames(tmp_path):
    out = small_run(tmp_path / "o")["out"]
    build_report(out, progress=False)
    page = _unit(out)
    assert "<img" not in page and 'class="ex' not in page and 'class="frame"' not in page
    assert 'class="chip in"' in page  # compact ids, members marked
    index = (out / "report" / "index.html").read_text()
    assert "top samples" not in index and "<img" not in index


def test_unit_labels_are_shown(run_with_images):
    out = run_with_images["out"]
    build_report(out, progress=False)
    page = _unit(out)
    assert "<title>feat / unit 0 (dog detector)" in page
    assert '<span class="label">dog detector</span>' in page
    assert "next (1 cat detector)" in _text(page)
    index = (out / "report" / "index.html").read_text()
    assert index.count("detector</span>") == 2


# ----------------------------------------------------------------------------- index extras


def test_index_summary_and_exemplar_strip(run_with_images):
    out = run_with_images["out"]
    build_report(out, progress=False)
    index = (out / "report" / "index.html").read_text()
    summary = index[index.index('id="summary"'):index.index('id="legend"')]
    text = _text(summary)
    assert "of 3 units explained" in text and "significant" in text
    assert re.search(r"\d+ of \d+ hold up out of sample", text)
    assert 'aria-label="AUROC distribution"' in summary
    assert re.search(r'<span class="formula">dog</span>', summary)
    strip = re.findall(r'<td class="strip">(.*?)</td>', index)
    assert len(strip) == 3 and all(s.count("<img") == 5 for s in strip)
    for src in re.findall(r'<img src="([^"]+)"', index):
        assert (out / "report" / src).is_file()


def test_skipped_images_and_concept_sources(tmp_path):
    extra = {"skipped_images": ["broken/a.png", {"path": "broken/b.jpg",
                                                 "error": "cannot identify image file"}],
             "concept_sources": {"dog": {"word": "dogs", "path": "dogs"},
                                 "cat": [{"word": "cat", "path": "pets/cat"},
                                         {"word": "kitty", "path": "pets/kitty"}]}}
    out = small_run(tmp_path / "o", extra=extra)["out"]
    build_report(out, progress=False)
    text = _text((out / "report" / "index.html").read_text())
    assert "2 images skipped (unreadable)" in text
    assert "broken/a.png" in text and "broken/b.jpg cannot identify image file" in text
    assert "from the word “dogs” in dogs" in _text(_unit(out, 0))
    assert "from the word “kitty” in pets/kitty" in _text(_unit(out, 1))


def test_hostile_text_is_escaped(tmp_path):
    out = small_run(tmp_path / "o", hostile=True,
                    extra={"skipped_images": [HOSTILE],
                           "concept_sources": {HOSTILE: {"word": HOSTILE, "path": HOSTILE}}},
                    )["out"]
    build_report(out, progress=False)
    pages = [(out / "report" / "index.html").read_text()]
    pages += [p.read_text() for p in (out / "report" / "units").rglob("*.html")]
    assert any(html.escape(HOSTILE, quote=False) in p or "&lt;script&gt;" in p for p in pages)
    for p in pages:
        assert "<script>alert" not in p
        assert p.count("<script") == p.count('<script src="')


def test_load_run_reads_the_split_that_save_run_wrote(run_with_images):
    run = load_run(run_with_images["out"])
    held = run.layers[0]["holdout_index"]
    assert held == run_with_images["res"].holdout_index.tolist()
