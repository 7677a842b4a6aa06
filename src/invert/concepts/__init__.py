"""Concept sets: named boolean concepts over samples, and builders for common label sources.

A :class:`ConceptSet` is what :func:`invert.explain` takes as ``concepts``: it exposes ``names``
(unique str) and ``matrix`` (an ``(n_samples, n_concepts)`` bool numpy array or scipy.sparse
CSR matrix), plus optional ``ids``, ``descriptions``, ``sample_ids`` and ``parents`` (hierarchy).

Builders
--------
- ImageNet + WordNet, as in the INVERT paper: :func:`imagenet_hierarchy`, :func:`from_wnids`,
  :func:`from_imagenet_folder`, :func:`from_wnid_table` (the 1,000 ImageNet classes need no
  WordNet install; other synsets read WordNet 3.0 via :class:`WordNet`).
- Folder trees: :func:`from_folders` (optionally mapped to WordNet synsets).
- Tables: :func:`from_table` (CSV/Parquet, wide or long).
- Annotations: :func:`from_coco` (COCO instances), :func:`from_masks` (segmentation masks).
- Text: :func:`from_spacy` (token-level, needs spaCy), :func:`from_topic_files` (documents).
"""

from .annotations import from_coco, from_masks
from .core import ConceptSet, ConstantConceptWarning, SkippedItemsWarning
from .folders import IMAGE_EXTENSIONS, choose_sense, from_folders
from .imagenet import (
    from_imagenet_folder,
    from_wnid_table,
    from_wnids,
    imagenet_classes,
    imagenet_hierarchy,
)
from .tables import from_table
from .text import TopicCorpus, from_spacy, from_topic_files, read_topic_files
from .tokens import align_tokens, check_aligned, token_concepts
from .wordnet import Hierarchy, Synset, WordNet, WordNetNotFoundError, hypernym_hierarchy

__all__ = [
    "token_concepts", "align_tokens", "check_aligned",
    "ConceptSet",
    "ConstantConceptWarning",
    "SkippedItemsWarning",
    "Hierarchy",
    "Synset",
    "WordNet",
    "WordNetNotFoundError",
    "hypernym_hierarchy",
    "imagenet_classes",
    "imagenet_hierarchy",
    "from_wnids",
    "from_imagenet_folder",
    "from_wnid_table",
    "from_folders",
    "choose_sense",
    "IMAGE_EXTENSIONS",
    "from_table",
    "from_coco",
    "from_masks",
    "from_spacy",
    "from_topic_files",
    "read_topic_files",
    "TopicCorpus",
]
