"""Data for a federation: one answer checker, procedural and file sources, and the partition.

`gsm_symbolic` is not imported here: it pulls in reasoning-gym (~2 s), which only that source needs.
"""

from fedlada.data.answers import answers_match, extract_answer, is_correct
from fedlada.data.files import check_file, load_file
from fedlada.data.partition import ClientData, FederationData, build_federation_data
from fedlada.data.types import Example

__all__ = [
    "ClientData",
    "Example",
    "FederationData",
    "answers_match",
    "build_federation_data",
    "check_file",
    "extract_answer",
    "is_correct",
    "load_file",
]
